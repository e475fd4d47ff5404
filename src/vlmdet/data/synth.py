"""Synthetic detection data: coloured shapes on textured backgrounds, written as COCO.

``write_synthetic_coco("data/", train=200, val=50, test=50, seed=0)`` writes::

    data/
      dataset.json               # the settings and class list used
      train/annotations.json     # COCO: images, annotations (xywh pixels), categories
      train/images/000000.jpg       # (or .png with image_format="png")
      val/...  test/...

Each image has its own size (non-square, ``min_side``..``max_side``), 0..``max_objects`` shapes
(a share of images have none: negatives), shapes of several classes in random colours, and any
two boxes overlap by at most ``max_overlap`` IoU. Boxes are the tight pixel extent of what was
drawn. With ``colour_by_class=True`` each class gets its own hue (evenly spaced on the colour
wheel, jittered), so the class can be read from colour as well as shape: the offline demo uses it
because a vision tower trained from random weights learns colour within minutes on a CPU but shape
much more slowly (figures in ``configs/demo.yaml``). Every image is generated from
``(seed, split, index)`` alone, so a dataset is identical for a seed whatever the split sizes.
"""

from __future__ import annotations

import colorsys
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
DEFAULT_CLASSES = ("circle", "square", "triangle", "star")


@dataclass
class SynthConfig:
    """Settings of a synthetic set (sizes in pixels of the written images)."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    min_side: int = 96
    max_side: int = 224
    size: tuple[int, int] | None = None  # fixed (width, height) for every image; None: random sides in min_side..max_side
    min_objects: int = 1
    max_objects: int = 3
    empty_fraction: float = 0.1
    min_object_frac: float = 0.18
    max_object_frac: float = 0.45
    max_overlap: float = 0.1
    rotate: bool = True  # False: squares and crosses axis-aligned, triangles and stars upright
    noise: float = 6.0
    colour_by_class: bool = False  # True: each class has its own hue (class readable from colour alone)
    image_format: str = "jpg"  # "jpg" (quality 92: small and fast, like most real datasets) or "png"
    seed: int = 0
    splits: dict[str, int] = field(default_factory=lambda: {"train": 200, "val": 50, "test": 50})

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown:
            raise ValueError(f"unknown synthetic shape(s) {unknown}; available: {', '.join(SHAPES)}")
        if not self.classes:
            raise ValueError("a synthetic set needs at least one class")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be jpg or png, got {self.image_format!r}")
        if not (8 <= self.min_side <= self.max_side):
            raise ValueError(f"need 8 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if self.size is not None:
            if len(self.size) != 2 or min(self.size) < 8:
                raise ValueError(f"size is (width, height), each >= 8, got {self.size}")
            self.size = (int(self.size[0]), int(self.size[1]))
        if not (0 <= self.min_objects <= self.max_objects):
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not (0.0 < self.min_object_frac <= self.max_object_frac <= 1.0):
            raise ValueError("need 0 < min_object_frac <= max_object_frac <= 1")
        self.classes = tuple(self.classes)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: list[float], phase: float) -> list[tuple[float, float]]:
        return [
            (cx + radii[i % len(radii)] * math.cos(phase + 2 * math.pi * i / n), cy + radii[i % len(radii)] * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)
        ]

    if shape == "square":
        return ring(4, [r], angle + math.pi / 4)
    if shape == "diamond":
        return ring(4, [r], math.pi / 2)
    if shape == "triangle":
        return ring(3, [r], angle - math.pi / 2)
    if shape == "star":
        return ring(10, [r, r * 0.45], angle - math.pi / 2)
    if shape == "cross":
        a = r * 0.33
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(shape)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> tuple[int, int, int]:
    # A saturated colour far enough from the background to be visible.
    for _ in range(50):
        c = rng.integers(0, 256, size=3)
        if np.abs(c.astype(int) - avoid.astype(int)).sum() > 200 and c.max() - c.min() > 80:
            return tuple(int(v) for v in c)
    return tuple(int(255 - v) for v in avoid)


def _class_colour(rng: np.random.Generator, class_index: int, n_classes: int) -> tuple[int, int, int]:
    # One hue per class, evenly spaced on the colour wheel; saturation and value jittered but kept
    # strong and dark enough to stand out from the light backgrounds.
    hue = (class_index / n_classes + rng.uniform(-0.03, 0.03)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.55, 0.85))
    return int(r * 255), int(g * 255), int(b * 255)


def render_image(cfg: SynthConfig, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[list[float], str]]]:
    """Draw one image; returns it and its objects as ``([x1, y1, x2, y2] pixels, class)``."""
    w = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    h = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    if cfg.size is not None:  # same draws as above, so the rest of the image stays seed-stable
        w, h = cfg.size
    bg = rng.integers(150, 256, size=3)
    # Background: a soft two-colour gradient plus noise, so "anything not flat" is not a shape.
    bg2 = np.clip(bg.astype(int) + rng.integers(-40, 41, size=3), 0, 255)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    arr = bg[None, None, :] * (1 - t) + bg2[None, None, :] * t
    arr = np.broadcast_to(arr, (h, w, 3)) + rng.normal(0, cfg.noise, size=(h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    objects: list[tuple[list[float], str]] = []
    n = 0 if rng.random() < cfg.empty_fraction else int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    side = min(w, h)
    for _ in range(n):
        for _attempt in range(30):
            k = int(rng.integers(len(cfg.classes)))
            shape = cfg.classes[k]
            size = rng.uniform(cfg.min_object_frac, cfg.max_object_frac) * side
            r = size / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            angle = float(rng.uniform(0, 2 * math.pi)) if cfg.rotate else 0.0
            if shape == "circle":
                pts = None
                box = np.array([cx - r, cy - r, cx + r, cy + r])
            else:
                pts = _polygon(shape, cx, cy, r, angle)
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                box = np.array([min(xs), min(ys), max(xs), max(ys)])
            box = np.clip(box, 0, [w, h, w, h])
            if (box[2] - box[0]) < 4 or (box[3] - box[1]) < 4:
                continue
            if any(_iou(box, np.array(b)) > cfg.max_overlap for b, _ in objects):
                continue
            colour = _class_colour(rng, k, len(cfg.classes)) if cfg.colour_by_class else _colour(rng, bg)
            if pts is None:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon(pts, fill=colour)
            objects.append(([round(float(v), 2) for v in box], shape))
            break
    return img, objects


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _write_one(job: tuple[SynthConfig, str, int, Path]) -> tuple[int, int, list[tuple[list[float], str]]]:
    cfg, split, i, path = job
    img, objects = render_image(cfg, _rng(cfg.seed, split, i))
    img.save(path, **({"quality": 92} if cfg.image_format == "jpg" else {}))
    return img.width, img.height, objects


def write_synthetic_coco(out_dir: str | Path, cfg: SynthConfig | None = None, workers: int = 1, **overrides) -> Path:
    """Write a synthetic COCO dataset (see module docstring) and return ``out_dir``.

    ``workers`` > 1 renders images in that many processes; every image depends only on
    ``(seed, split, index)``, so the files are the same whatever the count."""
    if cfg is None:
        cfg = SynthConfig(**overrides)
    elif overrides:
        raise TypeError("pass either a SynthConfig or keyword overrides, not both")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(cfg.classes)]
    cat_id = {c["name"]: c["id"] for c in categories}
    for split, count in cfg.splits.items():
        split_dir = out / split
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        jobs = [(cfg, split, i, split_dir / "images" / f"{i:06d}.{cfg.image_format}") for i in range(count)]
        if workers > 1 and count > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                rendered = pool.map(_write_one, jobs, chunksize=64)
        else:
            rendered = map(_write_one, jobs)
        for (_, _, i, path), (width, height, objects) in zip(jobs, rendered):
            images.append({"id": i + 1, "file_name": path.name, "width": width, "height": height})
            for box, label in objects:
                x1, y1, x2, y2 = box
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": cat_id[label],
                        "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                        "area": round((x2 - x1) * (y2 - y1), 2),
                        "iscrowd": 0,
                    }
                )
        coco = {
            "info": {"description": f"vlmdet synthetic shapes, split {split}, seed {cfg.seed}"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (split_dir / "annotations.json").write_text(json.dumps(coco))
    (out / "dataset.json").write_text(json.dumps({"kind": "vlmdet-synthetic", "format": "coco", **asdict(cfg)}, indent=2))
    return out
