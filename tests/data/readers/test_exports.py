"""Exports as annotation tools write them: Roboflow COCO and YOLO, supervision's DetectionDataset."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.data.readers.conftest import solid
from vlmdet.data.readers import ReadOptions, dataset_splits, open_dataset, read_supervision
from vlmdet.data.sample import DataError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import supervision as sv


def roboflow_coco(root, project="cells-xyz"):
    """Roboflow's COCO export: train/valid/test, `_annotations.coco.json` beside the images, the
    project's name as category 0 (supercategory of the others, used by no annotation)."""
    cats = [{"id": 0, "name": project, "supercategory": "none"}, {"id": 1, "name": "Platelets", "supercategory": project},
            {"id": 2, "name": "RBC", "supercategory": project}]
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        folder = root / split
        images, anns = [], []
        for k in range(n):
            solid(folder / f"{split}{k}_jpg.rf.abc{k}.jpg", (64, 48), colour=(10 * k, 50, 200))
            images.append({"id": k, "license": 1, "file_name": f"{split}{k}_jpg.rf.abc{k}.jpg", "height": 48, "width": 64, "date_captured": "2024"})
            anns.append({"id": k, "image_id": k, "category_id": 1 + k % 2, "bbox": [5, 6, 20, 10], "area": 200, "segmentation": [], "iscrowd": 0})
        (folder / "_annotations.coco.json").write_text(json.dumps({"info": {}, "licenses": [], "categories": cats, "images": images, "annotations": anns}))
    return root


def test_roboflow_coco_export_reads_as_it_comes(tmp_path):
    root = roboflow_coco(tmp_path)
    assert dataset_splits(root) == ["test", "train", "valid"]
    val = open_dataset(root, "val")  # the evaluation split is called `valid` there
    assert len(val) == 2 and val.classes == ["Platelets", "RBC"]
    assert "category 0 'cells-xyz' is the supercategory of the others and no annotation uses it" in val.report.summary()
    train = open_dataset(root, "train")
    assert train.classes == ["Platelets", "RBC"] and train.category_ids == {"Platelets": 1, "RBC": 2}
    np.testing.assert_allclose(train[0].boxes, [[5, 6, 25, 16]])


def test_an_unused_category_that_is_nobodys_supercategory_stays_a_class(tmp_path):
    solid(tmp_path / "a.png", (32, 32))
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25}],
            "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog", "supercategory": "animal"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    ds = open_dataset(tmp_path / "annotations.json")
    assert ds.classes == ["cat", "dog"] and not ds.report.notes


def roboflow_yolo(root):
    """Roboflow's YOLO export: data.yaml says `train: ../train/images` (relative to a folder above)."""
    for split in ("train", "valid"):
        for k in range(2):
            solid(root / split / "images" / f"{split}{k}.jpg", (100, 50))
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{k}.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.1 0.1\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['pothole', 'crack']\n\n"
                                    "roboflow:\n  workspace: w\n  project: p\n  version: 1\n")
    return root


def test_roboflow_yolo_paths_resolve_as_ultralytics_resolves_them(tmp_path):
    root = roboflow_yolo(tmp_path / "export")
    for spec in (root, root / "data.yaml"):
        train = open_dataset(spec, "train")
        val = open_dataset(spec, "val")
        assert (len(train), len(val)) == (2, 2) and train.classes == ["pothole", "crack"]
        np.testing.assert_allclose(train[0].boxes[0], [40, 15, 60, 35])
    with pytest.raises(DataError, match=r"'\.\./test/images' \(resolved to .*\) is neither an image folder"):
        open_dataset(root, "test")  # listed in data.yaml, missing on disk: still an error


def test_a_relative_data_yaml_path_without_a_path_key_reads(tmp_path, monkeypatch):
    roboflow_yolo(tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    for spec in ("export", "export/data.yaml"):
        assert len(open_dataset(spec, "train")) == 2 and len(open_dataset(spec, "val")) == 2


def test_supervision_detection_dataset_reads_with_the_same_boxes(tmp_path):
    paths = [str(solid(tmp_path / f"{k}.png", (60, 40))) for k in range(3)]
    det = {paths[0]: sv.Detections(xyxy=np.array([[1.0, 2, 30, 20], [5, 5, 70, 30]]), class_id=np.array([0, 1])),
           paths[1]: sv.Detections.empty(),
           paths[2]: sv.Detections(xyxy=np.array([[10.0, 10, 20, 20]]), class_id=np.array([1]))}
    sv_ds = sv.DetectionDataset(classes=["cat", "dog"], images=paths, annotations=det)
    ds = read_supervision(sv_ds)
    assert len(ds) == 3 and ds.classes == ["cat", "dog"]
    np.testing.assert_allclose(ds[0].boxes, [[1, 2, 30, 20], [5, 5, 60, 30]])  # clipped to the image, counted
    assert ds.report.clipped == 1 and ds[0].labels == ["cat", "dog"] and ds[1].labels == [] and ds[2].labels == ["dog"]
    with pytest.raises(DataError, match=r"unknown class 'dog'"):
        read_supervision(sv_ds, ReadOptions(classes=["cat"]))
    (tmp_path / "1.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"supervision DetectionDataset image 1 .*1.png"):
        read_supervision(sv_ds)
    assert len(read_supervision(sv_ds, ReadOptions(on_error="skip"))) == 2
