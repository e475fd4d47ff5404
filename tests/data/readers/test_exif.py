"""EXIF orientation: the image is shown oriented, and boxes move with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.images import exif_boxes_to_display
from vlmdet.data.readers import ReadOptions, read_coco, read_jsonl

RAW_WH = (60, 40)
RECT = (5, 8, 20, 30)  # raw-pixel rectangle, painted red


def _red_extent(img) -> list[float]:
    arr = np.asarray(img)
    ys, xs = np.where((arr[..., 0] > 200) & (arr[..., 1] < 50))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_boxes_drawn_on_raw_pixels_follow_the_rotation(tmp_path, orientation):
    solid(tmp_path / "a.png", RAW_WH, rect=RECT, orientation=orientation)
    # the file declares the raw size (60x40, the displayed image is 40x60): boxes are on raw pixels
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": RAW_WH[0], "height": RAW_WH[1]}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 8, 15, 22], "iscrowd": 0}])
    ds = read_coco(path)
    img = ds[0].load_image()
    assert img.size == ds[0].image_wh == RAW_WH[::-1]
    np.testing.assert_allclose(ds[0].boxes[0], _red_extent(img))  # the box still frames the red rectangle
    assert ds.report.exif_transformed == 1


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_declared_display_size_means_display_frame(tmp_path, orientation):
    # When the declared size is the displayed size (always the case for flips and 180-degree
    # turns, which keep the size), boxes are taken as drawn on the displayed image, as annotation
    # tools and Ultralytics do.
    solid(tmp_path / "a.png", RAW_WH, rect=RECT, orientation=orientation)
    x1, y1, x2, y2 = exif_boxes_to_display(np.array([RECT], dtype=float), orientation, RAW_WH)[0]
    display_wh = RAW_WH[::-1] if orientation >= 5 else RAW_WH
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": display_wh[0], "height": display_wh[1]}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}])
    ds = read_coco(path)
    np.testing.assert_allclose(ds[0].boxes[0], _red_extent(ds[0].load_image()))
    assert ds.report.exif_transformed == 0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_boxes_in_the_displayed_frame_are_kept(tmp_path, orientation):
    solid(tmp_path / "a.png", RAW_WH, rect=RECT, orientation=orientation)
    display_box = exif_boxes_to_display(np.array([RECT], dtype=float), orientation, RAW_WH)[0]
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.png", "boxes": [display_box.tolist()], "labels": ["cat"]}) + "\n")
    ds = read_jsonl(tmp_path / "d.jsonl")
    np.testing.assert_allclose(ds[0].boxes[0], _red_extent(ds[0].load_image()))


def test_exif_ignore_uses_raw_pixels(tmp_path):
    solid(tmp_path / "a.png", RAW_WH, rect=RECT, orientation=6)
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "boxes": [[5, 8, 20, 30]], "labels": ["cat"]}\n')
    ds = read_jsonl(tmp_path / "d.jsonl", options=ReadOptions(exif="ignore"))
    assert ds[0].image_wh == RAW_WH
    np.testing.assert_allclose(ds[0].boxes[0], _red_extent(ds[0].load_image()))
