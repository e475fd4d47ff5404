from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.readers.conftest import solid
from vlmdet.data.readers.common import ReadOptions
from vlmdet.data.readers.voc import read_voc, voc_layout
from vlmdet.data.sample import DataError, UnknownClassError


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[dict], path: str | None = None) -> str:
    """A VOC annotation; each object: name, box (xmin, ymin, xmax, ymax as written), optional flags."""
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>"]
    if path is not None:
        parts.append(f"<path>{path}</path>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for o in objects:
        flags = "".join(f"<{k}>{o[k]}</{k}>" for k in ("difficult", "truncated", "occluded") if k in o)
        box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"]))
        parts.append(f"<object><name>{o['name']}</name><pose>Unspecified</pose>{flags}<bndbox>{box}</bndbox></object>")
    return "".join(parts) + "</annotation>"


def write(ann_dir: Path, stem: str, text: str) -> Path:
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"{stem}.xml").write_text(text)
    return ann_dir / f"{stem}.xml"


@pytest.fixture
def voc_root(tmp_path):
    """A VOC root: 3 images (one negative), ImageSets train = a, c; val = b."""
    root = tmp_path / "VOC2007"
    solid(root / "JPEGImages" / "a.jpg", (64, 48))
    solid(root / "JPEGImages" / "b.jpg", (32, 40))
    solid(root / "JPEGImages" / "c.jpg", (50, 50))
    ann = root / "Annotations"
    write(ann, "a", voc_xml("a.jpg", (64, 48), [
        {"name": " dog ", "box": (5, 6, 14, 25), "difficult": 1},
        {"name": "cat", "box": (30, 10, 40, 20.5), "truncated": 1},
    ]))
    write(ann, "b", voc_xml("b.jpg", (32, 40), [{"name": "cat", "box": (1, 1, 32, 40)}]))
    write(ann, "c", voc_xml("c.jpg", (50, 50), []))
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\nc\n")
    (main / "val.txt").write_text("b\n")
    (main / "cat_train.txt").write_text("a  1\nc -1\n")
    return root


def test_voc_root_reads_the_split_shifting_minima_and_keeping_flags(voc_root):
    ds = read_voc(voc_root, split="train")
    assert [s.id for s in ds] == ["train/a", "train/c"] and ds.classes == ["cat", "dog"]
    a, c = ds.samples
    np.testing.assert_allclose(a.boxes, [[4, 5, 14, 25], [29, 9, 40, 20.5]])  # 1-based inclusive -> xmin-1, ymin-1
    assert a.labels == ["dog", "cat"] and a.image_wh == (64, 48) and "a.xml" in a.source
    assert a.meta["difficult"].tolist() == [True, False] and a.meta["truncated"].tolist() == [False, True]
    assert "occluded" not in a.meta
    assert a.ignored.tolist() == [True, False]  # difficult: not scored ...
    assert len(a.targets[0]) == 2  # ... but trained
    assert len(c.boxes) == 0 and c.meta["difficult"].shape == (0,)  # negative kept
    val = read_voc(voc_root, split="val")
    np.testing.assert_allclose(val[0].boxes, [[0, 0, 32, 40]])  # the whole image
    assert val.report.clipped == 0


def test_unknown_split_names_the_splits_and_no_imagesets_reads_everything(voc_root):
    with pytest.raises(DataError, match=r"no test\.txt split file \(splits here: train, val\)"):
        read_voc(voc_root, split="test")
    assert [s.id for s in read_voc(voc_root, split="validation")] == ["validation/b"]  # val.txt, by alias
    (voc_root / "ImageSets" / "Main" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val\.txt: the split file lists no image ids"):
        read_voc(voc_root, split="val")
    for f in (voc_root / "ImageSets" / "Main").iterdir():
        f.unlink()
    (voc_root / "ImageSets" / "Main").rmdir()
    (voc_root / "ImageSets").rmdir()
    assert [s.id for s in read_voc(voc_root, split="all")] == ["all/a", "all/b", "all/c"]


def test_plain_pair_resolves_images_by_filename_then_stem_never_trusting_path(tmp_path):
    solid(tmp_path / "images" / "x.png", (40, 30))
    solid(tmp_path / "images" / "y.jpeg", (40, 30))
    solid(tmp_path / "elsewhere" / "x.png", (10, 10))
    ann = tmp_path / "annotations"
    write(ann, "x", voc_xml("x.png", (40, 30), [{"name": "cat", "box": (2, 2, 10, 10)}], path=str(tmp_path / "elsewhere" / "x.png")))
    write(ann, "y", voc_xml("renamed.jpg", (40, 30), [{"name": "cat", "box": (1, 1, 5, 5), "occluded": 1}], path="C:\\Users\\me\\y.jpg"))
    for ds in (read_voc(tmp_path), read_voc(ann, images=tmp_path / "images")):
        assert [s.image_path for s in ds] == [tmp_path / "images" / "x.png", tmp_path / "images" / "y.jpeg"]
        assert "occluded" not in ds[0].meta and ds[1].meta["occluded"].tolist() == [True]


def test_same_images_and_boxes_as_supervision(voc_root):
    sv = pytest.importorskip("supervision")
    # An explicit Annotations/ + JPEGImages/ pair still honours the root's ImageSets.
    splits = [read_voc(voc_root / "Annotations", images=voc_root / "JPEGImages", split=s) for s in ("train", "val")]
    ours = [*splits[0], *splits[1]]
    theirs = sv.DetectionDataset.from_pascal_voc(str(voc_root / "JPEGImages"), str(voc_root / "Annotations"))
    assert len(ours) == len(theirs) == 3
    assert sorted(c.strip() for c in theirs.classes) == splits[0].classes  # vlmdet strips names; supervision does not
    for sample in ours:
        det = theirs.annotations[str(sample.image_path)]
        assert len(det) == len(sample.boxes)
        np.testing.assert_allclose(det.xyxy, sample.boxes, atol=1e-5)
        assert [theirs.classes[i].strip() for i in det.class_id] == sample.labels


def test_declared_size_mismatch_names_the_file_and_zero_size_is_unknown(tmp_path):
    solid(tmp_path / "images" / "a.png", (64, 48))
    write(tmp_path / "annotations", "a", voc_xml("a.png", (100, 48), []))
    with pytest.raises(DataError, match=r"a\.xml: the annotation says the image is 100x48"):
        read_voc(tmp_path)
    write(tmp_path / "annotations", "a", voc_xml("a.png", (0, 0), [{"name": "cat", "box": (1, 1, 5, 5)}]))
    assert read_voc(tmp_path)[0].image_wh == (64, 48)


def test_degenerate_boxes(tmp_path):
    solid(tmp_path / "images" / "a.png", (64, 48))
    objs = [
        {"name": "cat", "box": (10, 10, 10, 12)},  # xmin == xmax: one pixel wide under VOC's inclusive indices
        {"name": "cat", "box": (70, 10, 80, 20)},  # outside the image: empty once clipped
        {"name": "dog", "box": (0, 5, 0, 9)},  # index 0 (not a VOC pixel): empty once clipped
        {"name": "dog", "box": (50, 40, 70, 60)},  # partly outside: clipped
    ]
    write(tmp_path / "annotations", "a", voc_xml("a.png", (64, 48), objs))
    ds = read_voc(tmp_path)
    np.testing.assert_allclose(ds[0].boxes, [[9, 9, 10, 12], [49, 39, 64, 48]])
    assert ds.report.dropped_empty == 2 and ds.report.clipped == 1
    objs.append({"name": "dog", "box": (50, 10, 20, 30)})
    write(tmp_path / "annotations", "a", voc_xml("a.png", (64, 48), objs))
    with pytest.raises(DataError, match=r"a\.xml: object 5 'dog': xmin 50 > xmax 20"):
        read_voc(tmp_path)
    objs[-1] = {"name": "dog", "box": (5, "12px", 20, 30)}
    write(tmp_path / "annotations", "a", voc_xml("a.png", (64, 48), objs))
    with pytest.raises(DataError, match=r"a\.xml: object 5 'dog': ymin is '12px', not a number"):
        read_voc(tmp_path)


def test_malformed_xml_and_entity_bombs_are_refused_naming_the_file(tmp_path):
    solid(tmp_path / "images" / "a.png", (64, 48))
    write(tmp_path / "annotations", "a", "<annotation><filename>a.png</filename>\n<object><name>cat</name></annotation>")
    with pytest.raises(DataError, match=r"a\.xml: not well-formed XML at line 2, column \d+"):
        read_voc(tmp_path)
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><annotation>&y;</annotation>'
    write(tmp_path / "annotations", "a", bomb)
    with pytest.raises(DataError, match=r"a\.xml: refused XML"):
        read_voc(tmp_path)
    ds = read_voc(tmp_path, options=ReadOptions(on_error="skip"))
    assert len(ds) == 0 and "a.xml" in ds.report.skipped[0][0]


def test_missing_image_is_refused_or_skipped_and_counted(voc_root):
    (voc_root / "JPEGImages" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"c\.xml: image file not found: .*c\.jpg.*on-bad-data skip"):
        read_voc(voc_root)
    ds = read_voc(voc_root, options=ReadOptions(on_error="skip"))
    assert [s.id for s in ds] == ["train/a"] and len(ds.report.skipped) == 1
    assert "1 images skipped" in ds.report.summary() and "c.xml" in ds.report.summary()
    (voc_root / "ImageSets" / "Main" / "train.txt").write_text("a\nnope\n")
    with pytest.raises(DataError, match=r"nope\.xml: annotation file not found \(listed in the train split\)"):
        read_voc(voc_root)


def test_unknown_class_in_closed_set_is_an_error_even_when_skipping(voc_root):
    with pytest.raises(UnknownClassError, match=r"a\.xml: unknown class 'dog'"):
        read_voc(voc_root, options=ReadOptions(classes=["cat"], on_error="skip"))
    assert read_voc(voc_root, options=ReadOptions(classes=["dog", "cat", "bird"])).classes == ["dog", "cat", "bird"]


def test_voc_layout_both_ways_and_not_voc(voc_root, tmp_path):
    assert voc_layout(voc_root) == (voc_root / "Annotations", voc_root / "JPEGImages")
    pair = tmp_path / "pair"
    write(pair / "annotations", "x", voc_xml("x.png", None, []))
    (pair / "images").mkdir()
    assert voc_layout(pair) == (pair / "annotations", pair / "images")
    (tmp_path / "notvoc" / "annotations").mkdir(parents=True)
    (tmp_path / "notvoc" / "images").mkdir()
    (tmp_path / "notvoc" / "annotations" / "x.json").write_text("{}")
    assert voc_layout(tmp_path / "notvoc") is None and voc_layout(tmp_path / "missing") is None
    with pytest.raises(DataError, match="no XML annotation files found in .*notvoc/annotations"):
        read_voc(tmp_path / "notvoc")
    with pytest.raises(DataError, match=r"not a VOC folder.*found in: VOC2007"):
        read_voc(tmp_path)


def test_difficult_objects_are_trained_but_neither_hit_nor_miss_in_scoring(tmp_path):
    """VOC's protocol: a detection on a difficult object is not a false positive, and a difficult
    object left undetected is not a miss; the training target still holds it."""
    from vlmdet.codecs import Decoded
    from vlmdet.predict import Prediction, evaluate_predictions
    from vlmdet.rows import TaskSettings

    (tmp_path / "Annotations").mkdir()
    solid(tmp_path / "JPEGImages" / "a.jpg", (100, 100))
    objs = "".join(
        f"<object><name>cat</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for b, d in (((11, 11, 40, 40), 0), ((61, 61, 90, 90), 1)))
    (tmp_path / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{objs}</annotation>")
    s = read_voc(tmp_path)[0]
    assert s.ignored.tolist() == [False, True] and len(s.targets[1]) == 2
    settings = TaskSettings(family="qwen3_vl", classes=["cat"])

    def score(boxes):
        p = Prediction(s.id, "", Decoded(np.array(boxes, dtype=float).reshape(-1, 4), ["cat"] * len(boxes)))
        return evaluate_predictions([s], [p], settings)

    both, easy_only = score([[10, 10, 40, 40], [60, 60, 90, 90]]), score([[10, 10, 40, 40]])
    assert both.map50 == pytest.approx(1.0) and easy_only.map50 == pytest.approx(1.0)  # no false positive, no miss
    assert score([[60, 60, 90, 90]]).map50 == pytest.approx(0.0)  # finding only the difficult one finds nothing that counts
    s.meta["difficult"][:] = False  # scored as an ordinary object, the same answer misses half
    assert score([[10, 10, 40, 40]]).map50 == pytest.approx(0.5, abs=0.01)
