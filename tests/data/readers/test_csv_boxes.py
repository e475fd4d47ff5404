from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import ReadOptions, read_coco
from vlmdet.data.readers.csv_boxes import is_box_csv, read_csv
from vlmdet.data.sample import DataError, UnknownClassError

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax"


def write(folder, rows, header=HEADER, name="train_labels.csv"):
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def csv_dir(tmp_path):
    solid(tmp_path / "a.png", (64, 48))
    solid(tmp_path / "b.png", (32, 40))
    solid(tmp_path / "c.png", (50, 50))
    return tmp_path


GOOD = ["b.png,32,40,dog,1,2,4,6", "a.png,64,48,cat,4,5,14,25", "c.png,50,50,,,,,", "a.png,64,48,dog,30,10,40,20"]


def test_reads_rows_grouped_by_filename_in_file_order(csv_dir):
    ds = read_csv(write(csv_dir, GOOD))
    assert [s.image_path.name for s in ds] == ["b.png", "a.png", "c.png"]  # order of first appearance
    assert ds.classes == ["cat", "dog"]  # sorted unique names
    b, a, c = ds.samples
    np.testing.assert_allclose(a.boxes, [[4, 5, 14, 25], [30, 10, 40, 20]])  # xyxy pixels, as written
    assert a.labels == ["cat", "dog"] and a.image_wh == (64, 48)
    np.testing.assert_allclose(b.boxes, [[1, 2, 4, 6]])
    assert len(c.boxes) == 0 and c.labels == []  # an empty class and coordinates: a negative image
    assert ds.report.images == 3 and ds.report.boxes == 3 and not ds.report.skipped
    assert a.id == "train_labels.csv#a.png" and "train_labels.csv:3" in a.source


def test_same_boxes_as_read_coco_of_the_same_annotation(csv_dir):
    ds = read_csv(write(csv_dir, GOOD))
    images = [{"id": 1, "file_name": "b.png", "width": 32, "height": 40}, {"id": 2, "file_name": "a.png", "width": 64, "height": 48},
              {"id": 3, "file_name": "c.png", "width": 50, "height": 50}]
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}, {"id": 2, "image_id": 2, "category_id": 1, "bbox": [4, 5, 10, 20]},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [30, 10, 10, 10]}]
    coco = read_coco(write_coco(csv_dir, images, anns))
    assert ds.classes == coco.classes
    for s, t in zip(ds, coco, strict=True):
        assert s.image_path == t.image_path and s.image_wh == t.image_wh and s.labels == t.labels
        np.testing.assert_allclose(s.boxes, t.boxes)


def test_columns_in_any_order_extra_columns_ignored_bom_and_case(csv_dir):
    path = csv_dir / "x.csv"
    path.write_bytes("\ufeffXMAX,ymax,Class,note,filename,xmin,ymin, width ,height\n14,25,cat,\"a, b\",a.png,4,5,64,48\n".encode())
    ds = read_csv(path)
    np.testing.assert_allclose(ds[0].boxes, [[4, 5, 14, 25]])
    assert ds[0].labels == ["cat"] and is_box_csv(path)


def test_images_folder_default_and_given(tmp_path):
    solid(tmp_path / "images" / "a.png", (64, 48))
    ds = read_csv(write(tmp_path, ["a.png,64,48,cat,1,1,5,5"]))
    assert ds[0].image_path == tmp_path / "images" / "a.png"  # the images/ subfolder beside the CSV
    solid(tmp_path / "elsewhere" / "a.png", (64, 48))
    ds = read_csv(write(tmp_path, ["a.png,64,48,cat,1,1,5,5"]), images=tmp_path / "elsewhere")
    assert ds[0].image_path == tmp_path / "elsewhere" / "a.png"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.png,64,48,cat,abc,5,14,25", r"train_labels\.csv:3: xmin 'abc' is not a number"),
        ("a.png,64,48,cat,20,5,14,25", r"train_labels\.csv:3: xmin 20 > xmax 14"),
        ("a.png,64,48,cat,4,30,14,25", r"train_labels\.csv:3: ymin 30 > ymax 25"),
        ("a.png,64,48,cat,nan,5,14,25", r"train_labels\.csv:3: xmin 'nan' is not a finite number"),
        ("a.png,64.5,48,cat,4,5,14,25", r"train_labels\.csv:3: width '64.5' is not a positive whole number"),
        ("a.png,64,48,cat,4,5", r"train_labels\.csv:3: fewer fields than the header"),
        ("a.png,64,48,cat,dog,4,5,14,25", r"train_labels\.csv:3: more fields than the header"),
        ("a.png,64,48,,4,5,14,25", r"train_labels\.csv:3: a box without a class"),
        ("a.png,64,48,cat,,,,", r"train_labels\.csv:3: class 'cat' but no xmin, ymin, xmax, ymax"),
        (",64,48,cat,4,5,14,25", r"train_labels\.csv:3: no filename"),
        ("a.png,64,40,cat,4,5,14,25", r"train_labels\.csv:3: a\.png is 64x40 here but 64x48 at line 2"),
    ],
)
def test_bad_rows_name_file_and_line(csv_dir, row, message):
    path = write(csv_dir, ["a.png,64,48,cat,1,1,5,5", row])
    with pytest.raises(DataError, match=message):
        read_csv(path)


def test_missing_column_lists_the_header_found_and_expected(csv_dir):
    path = write(csv_dir, ["a.png,cat,4,5,14,25"], header="image,label,xmin,ymin,xmax,ymax")
    with pytest.raises(DataError, match=r"no column filename, width, height, class\. The header is 'image,label,xmin,ymin,xmax,ymax'; "
                       r"expected 'filename,width,height,class,xmin,ymin,xmax,ymax'"):
        read_csv(path)
    assert not is_box_csv(path)


def test_skip_drops_the_whole_image_of_a_bad_row_and_counts_it(csv_dir):
    path = write(csv_dir, ["a.png,64,48,cat,4,5,14,25", "b.png,32,40,dog,1,2,4,6", "a.png,64,48,dog,x,10,40,20", ",1,1,cat,1,1,2,2"])
    ds = read_csv(path, options=ReadOptions(on_error="skip"))
    assert [s.image_path.name for s in ds] == ["b.png"]  # a.png is never read with one of its boxes missing
    assert len(ds.report.skipped) == 2
    reasons = " ".join(r for _, r in ds.report.skipped)
    assert "train_labels.csv:4: xmin 'x' is not a number" in reasons and "train_labels.csv:5: no filename" in reasons
    assert ds.classes == ["cat", "dog"]  # classes do not change with what was skipped


def test_zero_size_boxes_are_dropped_and_counted(csv_dir):
    ds = read_csv(write(csv_dir, ["a.png,64,48,cat,4,5,4,25", "a.png,64,48,cat,4,5,14,25", "a.png,64,48,cat,50,40,90,90"]))
    np.testing.assert_allclose(ds[0].boxes, [[4, 5, 14, 25], [50, 40, 64, 48]])
    assert ds.report.dropped_empty == 1 and ds.report.clipped == 1


def test_missing_and_corrupt_images_follow_the_policy(csv_dir):
    (csv_dir / "b.png").unlink()
    (csv_dir / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    path = write(csv_dir, GOOD)
    with pytest.raises(DataError, match=r"train_labels\.csv:2 \(b\.png\): image file not found"):
        read_csv(path)
    ds = read_csv(path, options=ReadOptions(on_error="skip"))
    assert [s.image_path.name for s in ds] == ["a.png"] and len(ds.report.skipped) == 2
    assert "cannot decode" in ds.report.skipped[1][1]


def test_declared_size_must_match_the_image(csv_dir):
    with pytest.raises(DataError, match=r"train_labels\.csv:2 \(a\.png\): the annotation says the image is 60x48"):
        read_csv(write(csv_dir, ["a.png,60,48,cat,4,5,14,25"]))


def test_unknown_class_in_a_closed_set_is_never_skipped(csv_dir):
    path = write(csv_dir, GOOD)
    with pytest.raises(UnknownClassError, match="unknown class 'dog'"):
        read_csv(path, options=ReadOptions(classes=["cat"], on_error="skip"))
    assert read_csv(path, options=ReadOptions(classes=["dog", "cat", "bird"])).classes == ["dog", "cat", "bird"]


def test_blank_lines_are_ignored_and_line_numbers_stay_physical(csv_dir):
    path = write(csv_dir, ["", "a.png,64,48,cat,4,5,14,25", ",,,,,,,", "a.png,64,48,cat,q,5,14,25"])
    with pytest.raises(DataError, match=r"train_labels\.csv:5: xmin 'q'"):
        read_csv(path)


def test_file_level_problems(tmp_path):
    with pytest.raises(DataError, match="box CSV not found"):
        read_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: no column filename.*\(empty file\)"):
        read_csv(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes((HEADER + "\nä.png,1,1,cat,0,0,1,1\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: not UTF-8"):
        read_csv(tmp_path / "latin.csv")
    assert not is_box_csv(tmp_path / "nope.csv") and not is_box_csv(tmp_path / "empty.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert not is_box_csv(tmp_path / "bin.csv")


def test_windows_line_endings_and_a_pandas_index_column(csv_dir):
    path = csv_dir / "win.csv"
    path.write_bytes(b",filename,width,height,class,xmin,ymin,xmax,ymax\r\n0,a.png,64,48,cat,4,5,14,25\r\n1,a.png,64,48,cat,4,x,14,25\r\n")
    assert is_box_csv(path)
    with pytest.raises(DataError, match=r"win\.csv:3: ymin 'x' is not a number"):
        read_csv(path)
    path.write_bytes(path.read_bytes().replace(b",x,", b",6,"))
    np.testing.assert_allclose(read_csv(path)[0].boxes, [[4, 5, 14, 25], [4, 6, 14, 25]])
