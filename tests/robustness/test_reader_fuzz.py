"""Malformed COCO / YOLO / JSONL files, generated, through the readers.

The property, for every file: the read either refuses it with a :class:`DataError` that names the
file, or returns samples that are correct (finite boxes inside their image, string labels); with
``on_error="skip"`` every image entry is either such a sample or skipped and listed. Never another
exception, never a traceback.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.readers.conftest import solid
from vlmdet.data.readers import ReadOptions, read_coco, read_jsonl, read_yolo
from vlmdet.data.sample import DataError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["good.png", "good.png", "other.png", "corrupt.png", "missing.png", "../good.png", ""])
number = st.one_of(st.floats(-50, 150), st.integers(-50, 150), st.sampled_from([float("nan"), float("inf"), "12", None]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    solid(root / "good.png", (64, 48))
    solid(root / "other.png", (30, 90))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for split in ("images", "labels"):
        (root / "yolo" / split / "train").mkdir(parents=True)
    solid(root / "yolo" / "images" / "train" / "a.png", (64, 48))
    solid(root / "yolo" / "images" / "train" / "b.png", (40, 40))
    (root / "yolo" / "images" / "train" / "c.png").write_bytes(b"junk")
    return root


def check_samples(ds, n_entries=None):
    for s in ds.samples:
        w, h = s.image_wh
        assert s.boxes.shape == (len(s.labels), 4) and np.isfinite(s.boxes).all()
        assert (s.boxes[:, 0] >= 0).all() and (s.boxes[:, 2] <= w).all() and (s.boxes[:, 1] >= 0).all() and (s.boxes[:, 3] <= h).all()
        assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 3] > s.boxes[:, 1]).all()
        assert all(isinstance(label, str) for label in s.labels)
    if n_entries is not None:
        assert len(ds.samples) + len(ds.report.skipped) >= min(n_entries, 1) or n_entries == 0


def read_both_ways(read, path):
    """Strict and lenient reads; only DataError naming the file may come out."""
    for on_error in ("raise", "skip"):
        try:
            ds = read(ReadOptions(on_error=on_error))
        except DataError as exc:
            assert str(path.name) in str(exc) or "image" in str(exc), str(exc)
            continue
        check_samples(ds)
        if on_error == "skip":
            return ds
    return None


def _valid_coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "good.png", "width": 64, "height": 48}, {"id": 2, "file_name": "other.png", "width": 30, "height": 90}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 10, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


# One defect: (which list, which entry, which key — or the whole entry, "__delete__" a key,
# "__duplicate__" the entry — and the new value). Keys are drawn from the list's own fields so most
# files stay nearly valid and the per-record paths of the reader are the ones exercised.
KEYS = {
    "images": ["id", "file_name", "width", "height", None, "__delete__", "__duplicate__"],
    "annotations": ["id", "image_id", "category_id", "bbox", "bbox", "iscrowd", None, "__delete__", "__duplicate__"],
    "categories": ["id", "name", None, "__delete__", "__duplicate__"],
}
defect = st.sampled_from(sorted(KEYS)).flatmap(
    lambda section: st.tuples(
        st.just(section), st.integers(0, 3), st.sampled_from(KEYS[section]),
        st.one_of(junk, number, names, st.lists(number, min_size=4, max_size=4), st.lists(number, min_size=4, max_size=4)),
    )
)


def _apply(data: dict, defects) -> dict:
    for section, i, key, value in defects:
        entries = data[section]
        if not entries:
            continue
        entry = entries[i % len(entries)]
        if key is None:
            entries[i % len(entries)] = value  # the whole entry replaced by junk
        elif key == "__duplicate__":
            entries.append(dict(entry) if isinstance(entry, dict) else entry)
        elif key == "__delete__" and isinstance(entry, dict) and entry:
            entry.pop(sorted(entry)[i % len(entry)])
        elif isinstance(entry, dict) and key in entry:
            entry[key] = value
    return data


@FUZZ
@given(defects=st.lists(defect, min_size=0, max_size=3), top=st.one_of(st.none(), st.none(), st.none(), junk))
def test_malformed_coco_files(folder, defects, top):
    path = folder / "annotations.json"
    data = _apply(_valid_coco(), defects) if top is None else top
    path.write_text(json.dumps(data, allow_nan=True))
    read_both_ways(lambda o: read_coco(path, options=o), path)


row = st.one_of(
    st.builds(lambda c, xs: " ".join(str(v) for v in [c, *xs]), st.integers(-1, 3), st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))), min_size=0, max_size=9)),
    st.text(max_size=20),
)


@FUZZ
@given(rows_a=st.lists(row, max_size=4), rows_b=st.one_of(st.none(), st.lists(row, max_size=3)),
       names_yaml=st.sampled_from(["names: [cat, dog]", "names: {0: cat, 1: dog}", "names: {0: cat, 2: dog}", "names: []", "names: [cat, dog]\nnc: 3", "names: cat"]))
def test_malformed_yolo_files(folder, rows_a, rows_b, names_yaml):
    root = folder / "yolo"
    (root / "data.yaml").write_text(f"train: images/train\n{names_yaml}\n")
    (root / "labels" / "train" / "a.txt").write_text("\n".join(rows_a))
    b = root / "labels" / "train" / "b.txt"
    if rows_b is None:
        b.unlink(missing_ok=True)
    else:
        b.write_text("\n".join(rows_b))
    read_both_ways(lambda o: read_yolo(root / "data.yaml", "train", options=o), root / "data.yaml")


record = st.one_of(
    st.fixed_dictionaries({"image": names, "boxes": st.one_of(st.lists(st.lists(number, max_size=5), max_size=3), junk), "labels": st.one_of(st.lists(st.text(max_size=4), max_size=3), junk)},
                          optional={"box_format": st.sampled_from(["xyxy", "xywh", "cxcywh", "polar"]), "normalized": st.booleans(), "width": number, "height": number}),
    st.fixed_dictionaries({"image": names, "phrase": st.one_of(st.text(max_size=6), junk), "bbox": st.one_of(st.lists(number, max_size=4), junk)}),
    st.fixed_dictionaries({"image": names, "prefix": st.text(max_size=10), "suffix": st.one_of(st.text(max_size=30), st.just("<loc0100><loc0100><loc0500><loc0500> cat"))}),
    junk,
)


@FUZZ
@given(records=st.lists(record, max_size=5), garbage_line=st.one_of(st.none(), st.binary(max_size=12)))
def test_malformed_jsonl_files(folder, records, garbage_line):
    path = folder / "d.jsonl"
    lines = [json.dumps(r, allow_nan=True).encode() for r in records]
    if garbage_line is not None:
        lines.insert(len(lines) // 2, garbage_line.replace(b"\n", b" "))
    path.write_bytes(b"\n".join(lines))
    read_both_ways(lambda o: read_jsonl(path, options=o), path)


def test_the_properties_hold_on_good_files_too(folder):
    """The same checks on well-formed input: everything is read, nothing skipped."""
    path = folder / "ok.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "good.png", "width": 64, "height": 48}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}], "categories": [{"id": 1, "name": "cat"}]}))
    ds = read_both_ways(lambda o: read_coco(path, options=o), path)
    assert ds is not None and len(ds) == 1 and not ds.report.skipped and math.isclose(ds[0].boxes[0, 2], 4)
