from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def solid(path: Path, wh=(64, 48), colour=(200, 200, 200), rect=None, rect_colour=(255, 0, 0), orientation: int | None = None):
    """Write an image, optionally with a coloured rectangle (xyxy, raw pixels) and an EXIF orientation."""
    arr = np.zeros((wh[1], wh[0], 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    if rect is not None:
        x1, y1, x2, y2 = rect
        arr[y1:y2, x1:x2] = rect_colour
    img = Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, exif=exif)
    else:
        img.save(path)
    return path


@pytest.fixture
def coco_dir(tmp_path):
    """A small COCO set: 3 images (one negative), one crowd region, two categories."""
    solid(tmp_path / "a.png", (64, 48))
    solid(tmp_path / "b.png", (32, 40))
    solid(tmp_path / "c.png", (50, 50))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 40},
            {"id": 3, "file_name": "c.png", "width": 50, "height": 50},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 10, 10, 10], "area": 100, "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return tmp_path


def write_coco(folder: Path, images: list[dict], annotations: list[dict], categories=None) -> Path:
    categories = categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
