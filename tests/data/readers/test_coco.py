from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import ReadOptions, open_dataset, read_coco
from vlmdet.data.sample import DataError


def test_reads_boxes_as_xyxy_pixels_keeps_negatives_and_flags_crowd(coco_dir):
    ds = read_coco(coco_dir / "annotations.json")
    assert ds.classes == ["cat", "dog"]
    assert [s.image_wh for s in ds] == [(64, 48), (32, 40), (50, 50)]
    a, b, c = ds.samples
    np.testing.assert_allclose(a.boxes, [[4, 5, 14, 25], [30, 10, 40, 20]])
    assert a.labels == ["cat", "dog"] and a.iscrowd.tolist() == [False, True]
    boxes, labels = a.targets  # crowd regions are never training targets
    assert labels == ["cat"] and boxes.shape == (1, 4)
    assert len(c.boxes) == 0  # negative image kept
    assert ds.report.crowd == 1 and ds.report.images == 3
    assert a.load_image().size == (64, 48)


def test_partly_outside_is_clipped_and_empty_is_dropped(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 40, 30, 30], "iscrowd": 0},  # partly outside
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5], "iscrowd": 0},  # zero width
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [10, 10, -4, 5], "iscrowd": 0},  # negative
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [100, 100, 5, 5], "iscrowd": 0},  # entirely outside
    ]
    ds = read_coco(write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}], anns))
    np.testing.assert_allclose(ds[0].boxes, [[50, 40, 64, 48]])
    assert ds.report.clipped == 1 and ds.report.dropped_empty == 3
    assert "1 boxes clipped" in ds.report.summary() and "3 zero/negative-area boxes dropped" in ds.report.summary()


def test_missing_image_names_file_and_id_or_is_skipped_and_counted(coco_dir):
    (coco_dir / "b.png").unlink()
    with pytest.raises(DataError, match=r"image id 2 .*b\.png.*not found"):
        read_coco(coco_dir / "annotations.json")
    ds = read_coco(coco_dir / "annotations.json", options=ReadOptions(on_error="skip"))
    assert len(ds) == 2 and len(ds.report.skipped) == 1
    assert "image id 2" in ds.report.skipped[0][0]
    assert "1 images skipped" in ds.report.summary() and "b.png" in ds.report.summary()


def test_corrupt_image_names_file(coco_dir):
    (coco_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"image id 1 .*cannot decode"):
        read_coco(coco_dir / "annotations.json")
    # a truncated file that opens but does not decode is caught too
    good = (coco_dir / "c.png").read_bytes()
    (coco_dir / "c.png").write_bytes(good[: len(good) // 2])
    ds = read_coco(coco_dir / "annotations.json", options=ReadOptions(on_error="skip"))
    assert [s.meta["coco_image_id"] for s in ds] == [2]
    assert len(ds.report.skipped) == 2


def test_unknown_class_in_closed_set_is_an_error_even_when_skipping(coco_dir):
    with pytest.raises(DataError, match=r"unknown class 'dog'.*Add it to `classes`"):
        read_coco(coco_dir / "annotations.json", options=ReadOptions(classes=["cat"], on_error="skip"))


def test_declared_size_mismatch_is_an_error(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 100, "height": 48}], [])
    with pytest.raises(DataError, match="annotation says the image is 100x48"):
        read_coco(path)


def test_open_dataset_finds_split_folders(synth_dir):
    ds = open_dataset(synth_dir, "val")
    assert len(ds) == 8 and ds.classes == ["circle", "square", "triangle", "star"]
    with pytest.raises(DataError, match=r"no split 'nope' \(it has: test, train, val\)"):
        open_dataset(synth_dir, "nope")
