from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from vlmdet.data.synth import SynthConfig, write_synthetic_coco


def _digest(folder) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_loads_with_pycocotools_and_boxes_inside_images(synth_dir):
    for split in ("train", "val", "test"):
        coco = COCO(str(synth_dir / split / "annotations.json"))
        assert coco.getImgIds()
        for img_id, info in coco.imgs.items():
            with Image.open(synth_dir / split / "images" / info["file_name"]) as im:
                assert im.size == (info["width"], info["height"])
            for ann in coco.imgToAnns[img_id]:
                x, y, w, h = ann["bbox"]
                assert w > 0 and h > 0
                assert 0 <= x and 0 <= y and x + w <= info["width"] + 1e-6 and y + h <= info["height"] + 1e-6
                assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h, rel=1e-3)


def test_variety(tmp_path):
    out = write_synthetic_coco(tmp_path, seed=5, splits={"train": 60})
    data = json.loads((out / "train" / "annotations.json").read_text())
    sizes = {(im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) > 30 and any(w != h for w, h in sizes)
    per_image = {im["id"]: 0 for im in data["images"]}
    for a in data["annotations"]:
        per_image[a["image_id"]] += 1
    assert 0 in per_image.values(), "expected some negative (empty) images"
    assert max(per_image.values()) > 1, "expected images with several objects"
    assert len({a["category_id"] for a in data["annotations"]}) == len(data["categories"]) >= 3


def test_overlap_is_bounded(tmp_path):
    cfg = SynthConfig(seed=2, max_objects=5, max_overlap=0.05, splits={"train": 40})
    data = json.loads((write_synthetic_coco(tmp_path, cfg) / "train" / "annotations.json").read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append(np.array([x, y, x + w, y + h]))
    for boxes in by_image.values():
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
                union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
                assert inter / union <= 0.05 + 1e-3


def test_deterministic_for_a_seed(tmp_path):
    a = write_synthetic_coco(tmp_path / "a", seed=11, splits={"train": 6, "val": 3})
    b = write_synthetic_coco(tmp_path / "b", seed=11, splits={"train": 6, "val": 3})
    c = write_synthetic_coco(tmp_path / "c", seed=12, splits={"train": 6, "val": 3})
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # an image depends on (seed, split, index) only: a bigger split starts with the same images
    d = write_synthetic_coco(tmp_path / "d", seed=11, splits={"train": 8})
    assert (a / "train/images/000005.jpg").read_bytes() == (d / "train/images/000005.jpg").read_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [{"classes": ("hexagon",)}, {"min_side": 300, "max_side": 200}, {"max_objects": -1}, {"classes": ()}],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_colour_by_class_gives_each_class_its_own_hue(tmp_path):
    import colorsys

    cfg = SynthConfig(seed=3, classes=("circle", "square", "triangle"), colour_by_class=True, image_format="png",
                      max_overlap=0.0, noise=0.0, splits={"train": 40})
    out = write_synthetic_coco(tmp_path, cfg)
    coco = COCO(str(out / "train" / "annotations.json"))
    hues: dict[str, list[float]] = {}
    for img_id, info in coco.imgs.items():
        arr = np.asarray(Image.open(out / "train" / "images" / info["file_name"]).convert("RGB"))
        for ann in coco.imgToAnns[img_id]:
            x, y, w, h = ann["bbox"]
            r, g, b = arr[int(y + h / 2), int(x + w / 2)] / 255.0  # every shape covers its box centre
            hues.setdefault(coco.cats[ann["category_id"]]["name"], []).append(colorsys.rgb_to_hsv(r, g, b)[0])
    assert set(hues) == {"circle", "square", "triangle"}
    expected = {"circle": 0.0, "square": 1 / 3, "triangle": 2 / 3}
    for name, hs in hues.items():
        # hue distance on the circle: within the +-0.03 jitter (plus rounding), far from the other classes
        dist = [min(abs(h - expected[name]), 1 - abs(h - expected[name])) for h in hs]
        assert max(dist) < 0.05, (name, max(dist))


def test_rendering_in_several_processes_writes_the_same_files(tmp_path):
    import filecmp

    one = write_synthetic_coco(tmp_path / "one", splits={"train": 6})
    two = write_synthetic_coco(tmp_path / "two", splits={"train": 6}, workers=2)
    assert (one / "train" / "annotations.json").read_text() == (two / "train" / "annotations.json").read_text()
    names = sorted(p.name for p in (one / "train" / "images").iterdir())
    assert len(names) == 6 and all(filecmp.cmp(one / "train" / "images" / n, two / "train" / "images" / n, shallow=False) for n in names)
