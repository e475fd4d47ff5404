from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers.conftest import solid
from vlmdet.data.readers import ReadOptions, open_dataset, read_yolo
from vlmdet.data.sample import DataError


@pytest.fixture
def yolo_dir(tmp_path):
    for split, names in {"train": ["a", "b", "c"], "val": ["d"]}.items():
        for n in names:
            solid(tmp_path / "images" / split / f"{n}.png", (100, 50))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.4 0.4\n")  # 2nd partly outside
    (tmp_path / "labels" / "train" / "b.txt").write_text("1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n")  # polygon
    # c.png has no label file: a negative image
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return tmp_path


def test_reads_normalised_cxcywh_polygons_and_negatives(yolo_dir):
    ds = read_yolo(yolo_dir / "data.yaml", "train")
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    a, b, c = ds.samples
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [0, 0, 30, 15]])
    assert a.labels == ["cat", "dog"]
    np.testing.assert_allclose(b.boxes, [[10, 10, 30, 30]])
    assert len(c.boxes) == 0
    assert ds.report.clipped == 1
    assert len(open_dataset(yolo_dir / "data.yaml", "val")) == 1
    assert len(open_dataset(yolo_dir, "train")) == 3


def test_malformed_row_names_file_and_line(yolo_dir):
    (yolo_dir / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n0 0.5 oops 0.2 0.4\n")
    with pytest.raises(DataError, match=r"a\.txt:2: not numbers"):
        read_yolo(yolo_dir / "data.yaml", "train")
    ds = read_yolo(yolo_dir / "data.yaml", "train", options=ReadOptions(on_error="skip"))
    assert len(ds) == 2 and len(ds.report.skipped) == 1
    assert "a.txt:2: not numbers" in ds.report.skipped[0][1]


def test_class_id_outside_names_is_an_error(yolo_dir):
    (yolo_dir / "labels" / "train" / "a.txt").write_text("7 0.5 0.5 0.2 0.4\n")
    with pytest.raises(DataError, match=r"a\.txt:1: class id 7 is not in data.yaml names"):
        read_yolo(yolo_dir / "data.yaml", "train", options=ReadOptions(on_error="skip"))


def test_missing_split_and_corrupt_image(yolo_dir):
    with pytest.raises(DataError, match="no 'test' split"):
        read_yolo(yolo_dir / "data.yaml", "test")
    (yolo_dir / "images" / "train" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"b\.png"):
        read_yolo(yolo_dir / "data.yaml", "train")


def test_a_closed_class_set_is_the_datasets_classes_and_refuses_labels_outside_it(yolo_dir):
    ds = read_yolo(yolo_dir / "data.yaml", "train", options=ReadOptions(classes=["dog", "cat", "bird"]))
    assert ds.classes == ["dog", "cat", "bird"]  # the order given, a class the files never use kept
    with pytest.raises(DataError, match=r"unknown class 'dog'.*Add it to `classes`"):
        read_yolo(yolo_dir / "data.yaml", "train", options=ReadOptions(classes=["cat"], on_error="skip"))
