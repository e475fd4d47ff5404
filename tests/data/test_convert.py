"""``vlmdet data convert | stats | show``: what vlmdet reads, written back in a standard format, and looked at."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.data.readers.conftest import solid, write_coco
from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.data.splits import Holdout
from vlmdet.datatools import data_convert, data_stats, read_all_splits


@pytest.fixture
def voc_root(tmp_path):
    """A VOC root without ImageSets (one set): difficult objects, an EXIF-rotated photo, two classes."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    for k in range(10):
        wh = (80 + k, 60)
        solid(root / "JPEGImages" / f"im{k}.jpg", wh, colour=(20 * k, 90, 90))
        objs = [("cat", (5, 6, 30, 40), k % 3 == 0), ("dog" if k % 2 else "cat", (40, 10, 70, 50), False)]
        xml = "".join(
            f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objs)
        (root / "Annotations" / f"im{k}.xml").write_text(
            f"<annotation><filename>im{k}.jpg</filename><size><width>{wh[0]}</width><height>{wh[1]}</height><depth>3</depth></size>{xml}</annotation>")
    return root


def _by_name(ds):
    return {s.image_path.name: s for s in ds}


@pytest.mark.parametrize("to", ["coco", "yolo", "jsonl"])
def test_convert_round_trips_boxes_labels_and_images(voc_root, tmp_path, to):
    before = read_all_splits(str(voc_root), Holdout(0.2, seed=0))
    counts = data_convert(str(voc_root), to, tmp_path / to)
    assert {k: v["images"] for k, v in counts.items()} == {"train": 8, "val": 2}
    for split, ds in before.items():
        after = _by_name(open_dataset(tmp_path / to, split))
        assert set(after) == {s.image_path.name for s in ds}
        for s in ds:
            a = after[s.image_path.name]
            assert a.labels == s.labels and a.image_wh == s.image_wh
            np.testing.assert_allclose(a.boxes, s.boxes, atol=1e-3 * max(s.image_wh))
            assert a.image_path.read_bytes() == s.image_path.read_bytes()  # copied byte for byte
            if to == "coco":  # VOC's difficult survives as COCO's extra key; YOLO / JSONL have no such flag
                np.testing.assert_array_equal(a.meta["difficult"], s.meta["difficult"])
    with pytest.raises(FileExistsError, match="not an empty folder"):
        data_convert(str(voc_root), to, tmp_path / to)


def test_crowd_regions_are_left_out_of_yolo_and_counted(tmp_path):
    solid(tmp_path / "src" / "a.png", (50, 50))
    solid(tmp_path / "src" / "b.png", (40, 50))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}]
    path = write_coco(tmp_path / "src", [{"id": 1, "file_name": "a.png", "width": 50, "height": 50},
                                         {"id": 2, "file_name": "b.png", "width": 40, "height": 50}], anns, [{"id": 1, "name": "cat"}])
    counts = data_convert(str(path), "yolo", tmp_path / "y", Holdout(0.5))
    assert sum(c.get("crowd_left_out", 0) for c in counts.values()) == 1 and sum(c["boxes"] for c in counts.values()) == 2


def test_stats_count_what_the_data_holds_and_warn(voc_root):
    st = data_stats(str(voc_root))
    train, val = st.splits
    assert (train.name, val.name, train.images + val.images) == ("train", "val", 10)
    assert train.boxes + val.boxes == 20 and train.ignored + val.ignored == 4  # 4 difficult cats: trained, not scored
    assert train.per_class["cat"] + val.per_class["cat"] == 15 and train.per_image["2"] == train.images
    assert 80 <= train.widths[0] <= train.widths[1] <= train.widths[2] <= 89 and train.heights == (60, 60, 60)
    assert train.distinct_sizes == 8
    assert "held out 20% for val" in st.split_note
    assert any("class 'dog' has only" in w for w in st.warnings)
    text = st.text()
    assert "| images | 8 | 2 |" in text and "| difficult (not scored) |" in text


def test_stats_with_a_family_measure_the_tokens_a_model_is_fed(voc_root):
    st = data_stats(str(voc_root), family="qwen2_5_vl", max_pixels=56 * 56)
    fit = st.fit
    assert fit.family == "qwen2_5_vl" and fit.measured >= 1
    assert 0 < fit.target_tokens[0] <= fit.target_tokens[2]
    # Qwen2.5-VL: smart_resize to multiples of 28 under max_pixels, one token per 28x28 (2x2 merged 14-px patches)
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    tokens = sorted((lambda hw: hw[0] // 28 * (hw[1] // 28))(smart_resize(60, w, factor=28, min_pixels=28 * 28, max_pixels=56 * 56)) for w in range(80, 90))
    assert fit.image_tokens == (tokens[0], int(np.median(tokens)), tokens[-1])
    assert fit.longest_sequence > fit.target_tokens[2] + fit.image_tokens[2]
    assert f"a batch of 16 pads to at most {16 * fit.longest_sequence} tokens" in st.text()


def test_the_data_commands_through_the_cli(voc_root, tmp_path, capsys):
    assert main(["data", "stats", "--data", str(voc_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in out["splits"]] == ["train", "val"] and out["split_note"]
    assert main(["data", "show", "--data", str(voc_root), "--n", "6", "--out", str(tmp_path / "sheet.png")]) == 0
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size == (4 * 256, 2 * (256 + 14))
    # boxes were drawn: green pixels of the ground-truth colour on grey images
    arr = np.asarray(sheet)
    assert ((arr[..., 0] == 0) & (arr[..., 1] == 170) & (arr[..., 2] == 0)).sum() > 100
    assert main(["data", "convert", "--data", str(voc_root), "--to", "yolo", "--out", str(tmp_path / "y")]) == 0
    printed = capsys.readouterr().out
    assert "train: 8 images, 16 boxes" in printed and "  val: 2 images, 4 boxes" in printed
    assert (tmp_path / "y" / "data.yaml").is_file()
    assert main(["data", "stats", "--data", str(tmp_path / "nowhere")]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_a_train_and_test_dataset_gets_val_carved_from_train_and_keeps_its_test(tmp_path):
    for split, n in (("train", 10), ("test", 3)):
        folder = tmp_path / split
        images = [{"id": k + 1, "file_name": f"{split}{k}.png", "width": 30 + k, "height": 30} for k in range(n)]
        for k in range(n):
            solid(folder / f"{split}{k}.png", (30 + k, 30), colour=(k, 2 * k, 99))
        write_coco(folder, images, [{"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0} for k in range(n)])
    splits = read_all_splits(str(tmp_path), Holdout(0.2))
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 3}
    assert splits["test"].split_info is None and splits["val"].split_info["from"].endswith("[train]")
