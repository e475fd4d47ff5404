"""Data that would silently change meaning on the way in: each class refused (naming the file and
the fix) or counted — and the good form of the same input read unchanged."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import ReadOptions, open_dataset, read_coco, read_jsonl, read_yolo
from vlmdet.data.sample import DataError

IMG = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}


# ----------------------------------------------------------------------------- COCO ids
def test_repeated_coco_image_ids_are_refused_or_both_skipped(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    solid(tmp_path / "b.png", (64, 48))
    solid(tmp_path / "c.png", (64, 48))
    images = [IMG, {**IMG, "file_name": "b.png"}, {**IMG, "id": 2, "file_name": "c.png"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}, {"id": 2, "image_id": 2, "category_id": 2, "bbox": [2, 2, 5, 5]}]
    path = write_coco(tmp_path, images, anns)
    with pytest.raises(DataError, match=r"image id 1: 2 images share this id \(a\.png, b\.png\).*own id.*--on-bad-data skip"):
        read_coco(path)
    ds = read_coco(path, options=ReadOptions(on_error="skip"))
    # neither image of id 1 takes the annotation: both skipped and listed; image 2 read unchanged
    assert [s.meta["coco_image_id"] for s in ds] == [2] and ds[0].labels == ["dog"]
    assert len(ds.report.skipped) == 1 and "share this id" in ds.report.summary()


def test_annotations_pointing_to_no_image_are_refused_or_counted(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    anns = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}, {"id": 8, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    path = write_coco(tmp_path, [IMG], anns)
    with pytest.raises(DataError, match=r"1 annotations point to no image \(annotation ids 8; e\.g\. image_id 99\)"):
        read_coco(path)
    ds = read_coco(path, options=ReadOptions(on_error="skip"))
    assert ds.report.orphan_annotations == 1 and "1 annotations pointing to no image dropped" in ds.report.summary()
    assert len(ds) == 1 and len(ds[0].boxes) == 1


def test_non_contiguous_coco_category_ids_are_kept_for_results(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    cats = [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]
    path = write_coco(tmp_path, [IMG], [{"id": 1, "image_id": 1, "category_id": 17, "bbox": [1, 1, 5, 5]}], cats)
    ds = read_coco(path)
    assert ds.classes == ["cat", "dog"] and ds.category_ids == {"cat": 3, "dog": 17} and ds[0].labels == ["dog"]


# ----------------------------------------------------------------------------- pixel formats
def _png16_rgb(path, arr):
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("gray16", 128), ("rgb16", 128), ("float01", 128), ("gray8_in_int32", 128), ("rgba_transparent", 255), ("rgb8", 128)],
)
def test_every_pixel_format_reads_as_the_picture_a_viewer_shows(kind, expected, tmp_path):
    path = tmp_path / ("a.tiff" if kind.startswith("float") or kind.endswith("int32") else "a.png")
    if kind == "gray16":
        Image.fromarray(np.full((48, 64), 32896, np.uint16)).save(path)  # 32896 = 128 * 257
    elif kind == "rgb16":
        _png16_rgb(path, np.full((48, 64, 3), 32896, np.uint16))
    elif kind == "float01":
        Image.fromarray(np.full((48, 64), 128 / 255, np.float32)).save(path)
    elif kind == "gray8_in_int32":
        Image.fromarray(np.full((48, 64), 128, np.int32)).save(path)
    elif kind == "rgba_transparent":
        Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(path)  # fully transparent black: white, as transformers' convert_rgb
    else:
        Image.new("RGB", (64, 48), (128, 128, 128)).save(path)
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": path.name, "boxes": [[1, 1, 9, 9]], "labels": ["cat"]}) + "\n")
    ds = read_jsonl(tmp_path / "d.jsonl")
    arr = np.asarray(ds[0].load_image())
    assert ds[0].load_image().mode == "RGB" and arr.shape == (48, 64, 3)
    assert np.abs(arr.astype(int) - expected).max() <= 1, (kind, arr.min(), arr.max())


def test_pixels_with_no_known_range_are_refused_naming_the_file(tmp_path):
    Image.fromarray(np.full((48, 64), 5000.0, np.float32)).save(tmp_path / "a.tiff")
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.tiff", "boxes": [], "labels": []}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:1.*a\.tiff.*F pixels range 5000\.\.5000.*--on-bad-data skip"):
        read_jsonl(tmp_path / "d.jsonl")
    assert len(read_jsonl(tmp_path / "d.jsonl", options=ReadOptions(on_error="skip")).report.skipped) == 1


def test_a_16_bit_image_in_a_hugging_face_dataset_is_scaled_too(tmp_path):
    datasets = pytest.importorskip("datasets")
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(tmp_path / "w.png")
    features = datasets.Features({"image": datasets.Image(), "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)), "category": datasets.List(datasets.Value("string"))}})
    ds = datasets.Dataset.from_dict({"image": [str(tmp_path / "w.png")], "objects": [{"bbox": [[1, 1, 5, 5]], "category": ["cat"]}]}, features=features)
    ds.save_to_disk(str(tmp_path / "hf"))
    sample = open_dataset(f"hf:{tmp_path / 'hf'}", "train")[0]
    assert np.asarray(sample.load_image()).min() == 255  # white stays white (convert("RGB") would clip, not scale)


# ----------------------------------------------------------------------------- YOLO rules
@pytest.fixture
def yolo(tmp_path):
    solid(tmp_path / "images" / "train" / "a.png", (100, 50))
    solid(tmp_path / "images" / "train" / "b.png", (100, 50))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [cat, dog]\n")
    return tmp_path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("0 50 25 20 10", r"a\.txt:1: non-normalized or out of bounds coordinates \[50\.0, 25\.0, 20\.0, 10\.0\].*Pixels\? Divide"),
        ("0 0.5 -0.2 0.2 0.2", r"a\.txt:1: negative label values \[-0\.2\]"),
        ("0 0.5 nan 0.2 0.2", r"a\.txt:1: not finite numbers"),
    ],
)
def test_yolo_rows_follow_the_ultralytics_rules(yolo, row, message):
    (yolo / "labels" / "train" / "a.txt").write_text(row + "\n")
    with pytest.raises(DataError, match=message):
        read_yolo(yolo / "data.yaml")


def test_yolo_counts_missing_label_files_and_duplicate_rows(yolo):
    (yolo / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    ds = read_yolo(yolo / "data.yaml")  # b.png has no label file
    assert [len(s.boxes) for s in ds] == [2, 0]
    assert ds.report.no_label_file == 1 and ds.report.duplicate_rows == 1
    text = ds.report.summary()
    assert "1 images without a label file (read as negatives)" in text and "1 duplicate label rows dropped" in text


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("names: {0: cat, 2: dog}", r"a 2-class dataset needs class ids 0-1 in 'names', but they run 0-2 \(missing: \[1\]\)"),
        ("names: {1: cat, 2: dog}", r"ids 0-1 in 'names', but they run 1-2"),
        ("names: [cat, dog]\nnc: 3", r"'names' has 2 classes but 'nc: 3'"),
        ("names: [cat, dog\n", r"data\.yaml: invalid YAML at line 4, column 1 \(expected .,. or .\]."),
    ],
)
def test_yolo_names_with_gaps_or_a_wrong_count_are_refused(yolo, names, message):
    (yolo / "data.yaml").write_text("train: images/train\n" + names + "\n")
    with pytest.raises(DataError, match=message):
        read_yolo(yolo / "data.yaml")


def test_yolo_names_mapping_without_gaps_reads(yolo):
    (yolo / "data.yaml").write_text("train: images/train\nnames: {1: dog, 0: cat}\nnc: 2\n")
    (yolo / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    ds = read_yolo(yolo / "data.yaml")
    assert ds.classes == ["cat", "dog"] and ds[0].labels == ["dog"]


# ----------------------------------------------------------------------------- class names vs prompts
@pytest.mark.parametrize(
    ("family", "name", "bad"),
    [
        ("qwen2_5_vl", "cat, black", ","),
        ("qwen3_vl", 'the "cat"', '"'),
        ("smolvlm", "a,b", ","),
        ("paligemma", "cat; dog", ";"),
        ("florence2", "x<y", "<"),
    ],
)
def test_class_names_that_break_the_prompt_list_are_refused(family, name, bad, tiny_model_dir):
    from transformers import AutoProcessor

    from vlmdet.rows import TaskSettings

    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    settings = TaskSettings.for_model(family, processor, classes=["dog", name])
    with pytest.raises(ValueError, match=f"class name {name!r} contains {bad!r}.*Rename the class"):
        settings.check()
    TaskSettings.for_model(family, processor, classes=["dog", "traffic light", "o'clock"]).check()  # plain names pass


# ----------------------------------------------------------------------------- empty training data, ambiguous synth
def test_a_training_split_without_boxes_stops_before_the_model_loads(tmp_path, capsys):
    from vlmdet.cli import main

    solid(tmp_path / "data" / "train" / "a.png", (64, 48))
    write_coco(tmp_path / "data" / "train", [IMG], [])
    out = tmp_path / "run"
    assert main(["train", f"data={tmp_path / 'data'}", "model=./no-such-model", f"output_dir={out}", "eval_split="]) == 2
    err = capsys.readouterr().err
    assert "1 training images and not one box — nothing to learn" in err
    assert not any(out.iterdir())  # nothing written half-way


def test_data_synth_with_a_local_synth_folder_is_ambiguous(tmp_path, monkeypatch):
    from vlmdet.run import data_source
    from vlmdet.train.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "synth").mkdir()
    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}", "synth.splits={train: 2, val: 1}"])
    with pytest.raises(ValueError, match=r"data=synth is ambiguous.*data=./synth for the folder, or data=builtin:synth"):
        data_source(cfg, tmp_path / "run")
    cfg.data = "builtin:synth"
    assert open_dataset(data_source(cfg, tmp_path / "run"), "train").report.images == 2
    cfg.data = "./synth"
    assert data_source(cfg, tmp_path / "run") == "./synth"


def test_changed_synth_settings_write_the_data_again(tmp_path):
    from vlmdet.run import data_source
    from vlmdet.train.config import load_config

    cfg = load_config(None, [f"output_dir={tmp_path}", "synth.splits={train: 2}"])
    assert len(open_dataset(data_source(cfg, tmp_path), "train")) == 2
    cfg.synth["splits"] = {"train": 3}
    assert len(open_dataset(data_source(cfg, tmp_path), "train")) == 3
