"""Malformed COCO / YOLO / JSONL / Pascal VOC / box CSV / Label Studio files, generated, through the readers.

The property, for every file: the read either refuses it with a :class:`DataError` that names the
file, or returns samples that are correct (finite boxes inside their image, string labels); with
``on_error="skip"`` every image entry is either such a sample or skipped and listed. Never another
exception, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import math
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.readers.conftest import solid
from vlmdet.data.readers import ReadOptions, read_coco, read_jsonl, read_yolo
from vlmdet.data.readers.csv_boxes import read_csv
from vlmdet.data.readers.labelstudio import is_label_studio, read_label_studio
from vlmdet.data.readers.voc import read_voc
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


# Pascal VOC: XML built from generated parts (text escaped, or not quite), then optionally cut short,
# spliced with junk bytes or given an entity declaration.
xml_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=5)  # control bytes come from `splice`
coord = st.one_of(st.integers(-5, 120).map(str), st.floats(-5, 120).map(str), st.sampled_from(["", "nan", "inf", "1e400", "12px", " 7 "]), st.none())
good_box = st.tuples(st.integers(-2, 70), st.integers(-2, 70), st.integers(0, 40), st.integers(0, 40)).map(
    lambda t: [str(t[0]), str(t[1]), str(t[0] + t[2]), f"{t[1] + t[3]}.5"])
flag = st.one_of(st.none(), st.sampled_from(["0", "1"]), st.sampled_from(["2", "true", "", " 1 "]), xml_text)
voc_object = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["cat", " dog ", "bird"]), st.sampled_from(["cat", "dog"]), st.sampled_from(["", " \n"]), xml_text),
     "box": st.one_of(good_box, good_box, good_box, st.lists(coord, min_size=4, max_size=4)),
     "no_bndbox": st.sampled_from([False] * 9 + [True])},
    optional={"difficult": flag, "truncated": flag, "occluded": flag},
)
voc_file = st.fixed_dictionaries({
    "root": st.sampled_from(["annotation"] * 7 + ["Annotation"]),
    "filename": st.one_of(names, st.just("a.png"), st.none()),
    "size": st.one_of(st.none(), st.just(("64", "48")), st.tuples(*[st.sampled_from(["64", "48", "0", "30", "90", "-1", "64.0", "x", ""])] * 2)),
    "objects": st.lists(voc_object, max_size=4),
    "damage": st.sampled_from(["none"] * 6 + ["cut", "splice"]).flatmap(
        lambda kind: st.just(None) if kind == "none" else st.tuples(st.just(kind), st.integers(0, 400), st.binary(min_size=1, max_size=6))),
    "entity": st.sampled_from([False] * 7 + [True]),
})


def _voc_bytes(f: dict) -> bytes:
    def tag(k, v):
        return "" if v is None else f"<{k}>{escape(v)}</{k}>"

    parts = [tag("filename", f["filename"])]
    if f["size"] is not None:
        parts.append("<size>" + tag("width", f["size"][0]) + tag("height", f["size"][1]) + "</size>")
    for o in f["objects"]:
        box = "" if o.get("no_bndbox") else "<bndbox>" + "".join(tag(k, v) for k, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"])) + "</bndbox>"
        parts.append("<object>" + tag("name", o["name"]) + "".join(tag(k, o.get(k)) for k in ("difficult", "truncated", "occluded")) + box + "</object>")
    text = f"<{f['root']}>" + "".join(parts) + f"</{f['root']}>"
    if f["entity"]:
        text = f'<!DOCTYPE {f["root"]} [<!ENTITY e "dog">]>' + text.replace("<object><name>", "<object><name>&e;", 1)
    data = text.encode("utf-8", "surrogatepass")
    if f["damage"] is None:
        return data
    kind, at, junk_bytes = f["damage"]
    return data[:at] if kind == "cut" else data[:at] + junk_bytes + data[at:]


@pytest.fixture(scope="module")
def voc_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocfuzz")
    for name, wh in (("good.png", (64, 48)), ("other.png", (30, 90)), ("a.png", (64, 48))):
        solid(root / "images" / name, wh)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "annotations").mkdir()
    return root


@FUZZ
@given(files=st.lists(voc_file, min_size=1, max_size=2))
def test_malformed_voc_files(voc_folder, files):
    ann = voc_folder / "annotations"
    paths = [ann / f"{stem}.xml" for stem in ("a", "b")[: len(files)]]
    (ann / "b.xml").unlink(missing_ok=True)
    for path, f in zip(paths, files):
        path.write_bytes(_voc_bytes(f))
    for on_error in ("raise", "skip"):
        try:
            ds = read_voc(voc_folder, options=ReadOptions(on_error=on_error))
        except DataError as exc:
            assert on_error == "raise" and any(p.name in str(exc) for p in paths), str(exc)
            continue
        check_samples(ds)
        for s in ds.samples:
            assert all(v.shape == (len(s.boxes),) and v.dtype == bool for v in s.meta.values())
            assert s.ignored.shape == (len(s.boxes),)
        # every file is a sample or a listed skip
        assert len(ds.samples) + len(ds.report.skipped) == len(paths)


# Box CSV (TFOD) and Label Studio: valid files drawn over a folder of images of known sizes, then a
# few defects (a cell, a key or a whole entry replaced, deleted or repeated), maybe a junk line.
TABLE_IMAGES = {"img0.png": (64, 48), "img1.png": (30, 90), "img2.png": (50, 50), "img3.png": (48, 64)}
CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
bad_value = st.one_of(junk, number, names, st.sampled_from([0, 15, 90, 360, -1, 100, 1e9, "", "img1.png", "cat", [], {}]))
bad_cell = st.one_of(number.map(str), st.text(max_size=6), names, st.sampled_from(["", "64", "48", "nan", "1e400", "-3", "img1.png", " cat "]))


@pytest.fixture(scope="module")
def table_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tablefuzz")
    for name, wh in TABLE_IMAGES.items():
        solid(root / name, wh)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


@st.composite
def csv_table(draw):
    header = list(draw(st.permutations(CSV_COLUMNS + draw(st.sampled_from([[], [], ["note"]])))))
    rows = []
    for name in draw(st.lists(st.sampled_from(sorted(TABLE_IMAGES)), max_size=6)):  # names repeat: images of several boxes
        w, h = TABLE_IMAGES[name]
        row = {"filename": name, "width": str(w), "height": str(h), "note": "n"}
        if draw(st.integers(0, 5)) == 0:
            row.update({c: "" for c in CSV_COLUMNS[3:]})  # a negative image
        else:
            x1, y1 = draw(st.integers(-3, w)), draw(st.integers(-3, h))
            x2, y2 = draw(st.integers(x1, w + 5)), draw(st.integers(y1, h + 5))
            row.update({"class": draw(st.sampled_from(["cat", "dog"])), "xmin": str(x1), "ymin": str(y1), "xmax": str(x2), "ymax": f"{y2}.0"})
        rows.append(row)
    return header, rows


@FUZZ
@given(table=csv_table(), cells=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(CSV_COLUMNS), bad_cell), max_size=3),
       drop=st.one_of(*[st.none()] * 9, st.sampled_from(CSV_COLUMNS)), garbage=st.one_of(*[st.none()] * 4, st.text(max_size=15)))
def test_malformed_box_csv_files(table_folder, table, cells, drop, garbage):
    header, rows = table
    for i, col, value in cells:
        if rows:
            rows[i % len(rows)][col] = value
    header = [c for c in header if c != drop]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    lines = buf.getvalue().splitlines(keepends=True)
    if garbage is not None:
        lines.insert(max(1, len(lines) // 2), garbage.replace("\n", " ").replace("\r", " ") + "\n")
    path = table_folder / "boxes.csv"
    path.write_text("".join(lines), encoding="utf-8")
    ds = read_both_ways(lambda o: read_csv(path, options=o), path)
    if garbage is None and drop is None:
        assert ds is not None  # only defects in rows: skipping reads the file
        kept = [r for r in rows if any(r[c].strip() for c in CSV_COLUMNS)]
        named = {r["filename"].strip() for r in kept if r["filename"].strip()}
        # every image is a sample or a listed skip; a row without a filename is a skip of its own
        assert len(ds.samples) + len(ds.report.skipped) == len(named) + sum(1 for r in kept if not r["filename"].strip())
        if not cells:
            assert len(ds.samples) == len(named) and not ds.report.skipped
            assert ds.report.boxes + ds.report.dropped_empty == sum(1 for r in rows if r["class"])


@st.composite
def ls_export(draw):
    """A valid export: JSON tasks or JSON_MIN records, each of its own image, referenced as Label
    Studio writes it; boxes in percent of the image."""
    shape = draw(st.sampled_from(["json", "json", "min"]))
    tasks, n_boxes = [], 0
    for tid, name in enumerate(draw(st.permutations(sorted(TABLE_IMAGES)))[: draw(st.integers(0, 4))], start=1):
        w, h = TABLE_IMAGES[name]
        ref = draw(st.sampled_from([name, f"/data/upload/1/0123abcd-{name}", f"/data/local-files/?d={name}", f"https://example.com/x/{name}"]))
        boxes = draw(st.lists(st.tuples(st.floats(-5, 95), st.floats(-5, 95), st.floats(0, 60), st.floats(0, 60)), max_size=3))
        n_boxes += len(boxes)
        values = [{"x": x, "y": y, "width": bw, "height": bh, "rotation": 0, "rectanglelabels": [draw(st.sampled_from(["cat", "dog"]))]} for x, y, bw, bh in boxes]
        if shape == "min":
            tasks.append({"image": ref, "id": tid, "label": [{**v, "original_width": w, "original_height": h} for v in values], "annotator": 1, "annotation_id": tid})
        else:
            results = [{"id": f"r{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": w, "original_height": h, "value": v}
                       for k, v in enumerate(values)]
            tasks.append({"id": tid, "data": {"image": ref}, "annotations": [{"id": tid, "result": results, "was_cancelled": False}], "predictions": []})
    return tasks, n_boxes


def _slots(node, out):
    """Every (container, key) of a JSON tree, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        out.append((node, key))
        _slots(child, out)
    return out


@FUZZ
@given(export=ls_export(), defects=st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["set", "set", "delete", "repeat"]), bad_value), max_size=3),
       top=st.one_of(*[st.none()] * 9, junk))
def test_malformed_label_studio_files(table_folder, export, defects, top):
    tasks, n_boxes = export
    for i, action, value in defects:
        slots = _slots(tasks, [])
        if not slots:
            break
        parent, key = slots[i % len(slots)]
        if action == "set":
            parent[key] = value
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))
    data = tasks if top is None else top
    path = table_folder / "ls.json"
    path.write_text(json.dumps(data, allow_nan=True))
    ds = read_both_ways(lambda o: read_label_studio(path, options=o), path)
    if top is None:
        assert ds is not None  # only defects in tasks: skipping reads the file
        assert len({s.image_path for s in ds.samples}) == len(ds.samples)  # one image, one sample
        if not defects:
            assert len(ds.samples) == len(tasks) and not ds.report.skipped
            assert ds.report.boxes + ds.report.dropped_empty == n_boxes
    is_label_studio(path)  # sniffing never raises
