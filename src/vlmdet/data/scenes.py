"""Pre-training scenes for the tiny models: named colours, six shapes, textures and clutter.

A real VLM has seen millions of images with captions, counts and referring boxes before anyone
fine-tunes it for detection. vlmdet's offline tiny models can only see what vlmdet draws, so
:mod:`vlmdet.models.pretrained` pre-trains them on these scenes, with tasks that are *not* the
demo's task (a closed-set "detect every circle, square and triangle with its box"):

* ``describe`` — name the shapes and their colours, left to right (recognition, no boxes);
* ``count``    — how many shapes there are;
* ``locate``   — the box of the shape of one colour ("Outline the red shape.": grounding by colour,
  with "<colour> shape" as the label, never a shape name).

The scenes differ from the demo's data as well: all six shapes (:data:`vlmdet.data.synth.SHAPES`),
one of eight named colours each, textured backgrounds (stripes, checks, gradients) with thin lines
and dots as clutter. Every scene is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vlmdet.data.synth import SHAPES, _iou, _polygon

# Named colours (RGB); each drawn shape's colour is jittered around one of these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (135, 50, 185),
    "orange": (240, 125, 20),
    "black": (20, 20, 20),
    "white": (248, 248, 248),
}
TASKS = ("describe", "count", "locate")


@dataclass(frozen=True)
class Scene:
    """One drawn scene: the image and its objects as ``([x1, y1, x2, y2] pixels, shape, colour)``."""

    image: Image.Image
    objects: list[tuple[list[float], str, str]]


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.integers(95, 200, size=3).astype(float)
    other = np.clip(base + rng.integers(-45, 46, size=3), 0, 255)
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # stripes at a random angle and period
        a, period = rng.uniform(0, math.pi), rng.uniform(6, 16)
        t = ((np.cos(a) * xx + np.sin(a) * yy) // period % 2)[..., None]
    elif kind == 1:  # checks
        period = int(rng.integers(8, 20))
        t = (((xx // period) + (yy // period)) % 2)[..., None]
    else:  # gradient
        t = (xx / max(1, w - 1))[..., None] if rng.random() < 0.5 else (yy / max(1, h - 1))[..., None]
    arr = base * (1 - t) + other * t + rng.normal(0, 5.0, size=(h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, min_side: int = 96, max_side: int = 160, max_objects: int = 3) -> Scene:
    """Draw one scene: 0..``max_objects`` shapes in distinct named colours, 18-50% of the short side."""
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    img = Image.fromarray(_background(rng, w, h), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 7))):  # clutter: thin lines and dots, too small to be shapes
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            a, length = rng.uniform(0, 2 * math.pi), rng.uniform(8, 30)
            draw.line([(x, y), (x + length * math.cos(a), y + length * math.sin(a))], fill=colour, width=1)
        else:
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, 2.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    n = 0 if rng.random() < 0.08 else int(rng.integers(1, max_objects + 1))
    colours = list(rng.permutation(list(PALETTE)))
    objects: list[tuple[list[float], str, str]] = []
    side = min(w, h)
    for colour_name in colours[:n]:
        for _attempt in range(30):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            r = rng.uniform(0.18, 0.5) * side / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            angle = float(rng.uniform(0, 2 * math.pi))
            if shape == "circle":
                pts, box = None, np.array([cx - r, cy - r, cx + r, cy + r])
            else:
                pts = _polygon(shape, cx, cy, r, angle)
                box = np.array([min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts)])
            box = np.clip(box, 0, [w, h, w, h])
            if any(_iou(box, np.array(b)) > 0.05 for b, _, _ in objects):
                continue
            fill = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in PALETTE[str(colour_name)])
            if pts is None:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            else:
                draw.polygon(pts, fill=fill)
            objects.append(([round(float(v), 2) for v in box], shape, str(colour_name)))
            break
    return Scene(img, objects)


def describe(objects: list[tuple[list[float], str, str]]) -> str:
    """The ``describe`` answer: ``"a red star, a blue circle"`` left to right, or ``"no shapes"``."""
    if not objects:
        return "no shapes"
    return ", ".join(f"a {colour} {shape}" for _, shape, colour in sorted(objects, key=lambda o: (o[0][0] + o[0][2])))


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0x5CE7E, index])
