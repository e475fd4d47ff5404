from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.data.readers.conftest import solid
from vlmdet.codecs import get_codec
from vlmdet.data.readers import ReadOptions, open_dataset, read_grounding, read_hf, read_jsonl, read_refcoco
from vlmdet.data.sample import DataError


def _lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_detection_formats(tmp_path):
    solid(tmp_path / "a.png", (100, 50))
    path = _lines(
        tmp_path / "d.jsonl",
        [
            {"image": "a.png", "boxes": [[10, 5, 30, 25]], "labels": ["cat"]},
            {"image": "a.png", "boxes": [[10, 5, 20, 20]], "labels": ["dog"], "box_format": "xywh"},
            {"image": "a.png", "boxes": [[0.5, 0.5, 0.2, 0.2]], "labels": ["cat"], "box_format": "cxcywh", "normalized": True},
            {"image": "a.png", "boxes": [], "labels": []},
        ],
    )
    ds = read_jsonl(path)
    assert ds.classes == ["cat", "dog"]
    np.testing.assert_allclose(ds[0].boxes, [[10, 5, 30, 25]])
    np.testing.assert_allclose(ds[1].boxes, [[10, 5, 30, 25]])
    np.testing.assert_allclose(ds[2].boxes, [[40, 20, 60, 30]])
    assert len(ds[3].boxes) == 0


def test_jsonl_paligemma_maestro_style(tmp_path):
    solid(tmp_path / "a.png", (200, 100))
    suffix = get_codec("paligemma").encode([[20, 10, 100, 60], [150, 50, 190, 90]], ["cat", "dog"], (200, 100))
    path = _lines(tmp_path / "p.jsonl", [{"image": "a.png", "prefix": "detect cat ; dog", "suffix": suffix}])
    ds = read_jsonl(path)
    assert ds.classes == ["cat", "dog"] and ds[0].labels == ["cat", "dog"]
    np.testing.assert_allclose(ds[0].boxes, [[20, 10, 100, 60], [150, 50, 190, 90]], atol=200 / 1024)
    _lines(path, [{"image": "a.png", "prefix": "detect cat", "suffix": "<loc0001> cat"}])
    with pytest.raises(DataError, match=r"p\.jsonl:1: suffix is not"):
        read_jsonl(path)


def test_jsonl_bad_lines_name_the_line_or_are_skipped(tmp_path):
    solid(tmp_path / "a.png", (100, 50))
    path = _lines(
        tmp_path / "d.jsonl",
        [
            {"image": "a.png", "boxes": [[1, 2, 3, 4]], "labels": ["cat"]},
            '{"image": "a.png", "boxes": [[1, 2, 3',
            {"image": "missing.png", "boxes": [], "labels": []},
            {"image": "a.png", "boxes": [[1, 2, 3, 4]], "labels": ["cat", "dog"]},
        ],
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        read_jsonl(path)
    ds = read_jsonl(path, options=ReadOptions(on_error="skip"))
    assert len(ds) == 1
    assert [w.rsplit(":", 1)[1] for w, _ in ds.report.skipped] == ["2", "3", "4"]


def test_jsonl_one_flat_box_reads_and_other_flat_lengths_are_refused(tmp_path):
    solid(tmp_path / "a.png", (100, 50))
    one = _lines(tmp_path / "one.jsonl", [{"image": "a.png", "bbox": [1, 2, 30, 40], "labels": ["cat"]}])
    np.testing.assert_allclose(read_jsonl(one)[0].boxes, [[1, 2, 30, 40]])
    flat = _lines(tmp_path / "flat.jsonl", [{"image": "a.png", "boxes": [1, 2, 30, 40, 5, 6, 50, 45], "labels": ["cat", "dog"]}])
    with pytest.raises(DataError, match=r"flat\.jsonl:1: a box is 4 numbers \[x1, y1, x2, y2\], got 8 .*list of lists"):
        read_jsonl(flat)


def test_grounding_jsonl(tmp_path):
    solid(tmp_path / "a.png", (100, 50))
    path = _lines(tmp_path / "g.jsonl", [{"image": "a.png", "phrase": "the red car", "bbox": [10, 10, 40, 30]}])
    ds = read_grounding(path)
    assert ds[0].phrase == "the red car" and ds[0].labels == ["the red car"]
    np.testing.assert_allclose(ds[0].boxes, [[10, 10, 40, 30]])
    _lines(path, [{"image": "a.png", "boxes": [[1, 2, 3, 4]], "labels": ["x"]}])
    with pytest.raises(DataError, match="needs a 'phrase'"):
        read_grounding(path)


@pytest.mark.parametrize("suffix", [".json", ".p"])
def test_refcoco_layout(tmp_path, suffix):
    import pickle

    solid(tmp_path / "images" / "COCO_1.png", (80, 60))
    instances = {
        "images": [{"id": 1, "file_name": "COCO_1.png", "width": 80, "height": 60}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 15]}],
    }
    refs = [
        {"ref_id": 0, "ann_id": 9, "image_id": 1, "split": "train", "sentences": [{"sent": "left dog"}, {"sent": "brown dog"}]},
        {"ref_id": 1, "ann_id": 9, "image_id": 1, "split": "testA", "sentences": [{"sent": "that one"}]},
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    refs_path = tmp_path / f"refs(unc){suffix}"
    if suffix == ".p":
        refs_path.write_bytes(pickle.dumps(refs))
    else:
        refs_path.write_text(json.dumps(refs))
    ds = read_refcoco(refs_path, tmp_path / "instances.json", tmp_path / "images", split="train")
    assert [s.phrase for s in ds] == ["left dog", "brown dog"]
    np.testing.assert_allclose(ds[0].boxes, [[10, 20, 40, 35]])
    assert [s.phrase for s in open_dataset(refs_path, "testA")] == ["that one"]


@pytest.fixture
def hf_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "objects": {
                "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "category": datasets.List(datasets.ClassLabel(names=["cat", "dog"])),
            },
            "caption": datasets.Value("string"),
        }
    )
    rows = {
        "image": [Image.new("RGB", (64, 32), (9, 9, 9)), Image.new("RGB", (20, 20))],
        "objects": [{"bbox": [[4, 4, 10, 8], [50, 20, 30, 30]], "category": [0, 1]}, {"bbox": [], "category": []}],
        "caption": ["a cat", "nothing"],
    }
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})
    ds.save_to_disk(str(tmp_path / "hfds"))
    return tmp_path / "hfds"


def test_hf_datasets_local_folder(hf_dir):
    ds = read_hf(hf_dir, split="train")
    assert ds.classes == ["cat", "dog"]
    np.testing.assert_allclose(ds[0].boxes, [[4, 4, 14, 12], [50, 20, 64, 32]])
    assert ds[0].labels == ["cat", "dog"] and ds.report.clipped == 1
    assert ds[0].load_image().size == (64, 32) and len(ds[1].boxes) == 0
    assert len(open_dataset(hf_dir, "train")) == 2
    assert len(open_dataset(f"hf:{hf_dir}", "train")) == 2
    g = read_hf(hf_dir, split="train", phrase_column="caption")
    assert g[0].phrase == "a cat" and g[0].labels == ["a cat", "a cat"]


def test_hf_bad_columns_and_offline_hub(hf_dir):
    with pytest.raises(DataError, match="no column 'img'"):
        read_hf(hf_dir, image_column="img")
    with pytest.raises(DataError, match="no split 'val'"):
        read_hf(hf_dir, split="val")
    with pytest.raises(DataError, match="cannot load dataset 'someone/not-here'"):
        read_hf("someone/not-here", split="train")
