from __future__ import annotations

import json

import numpy as np
import pytest

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import ReadOptions, read_coco
from vlmdet.data.readers.labelstudio import is_label_studio, read_label_studio
from vlmdet.data.sample import DataError, UnknownClassError


def rect(x, y, w, h, label="cat", size=(200, 100), rid="r1", rotation=0, **extra):
    out = {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
           "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label] if isinstance(label, str) else label}}
    if size is not None:
        out["original_width"], out["original_height"] = size
    return {**out, **extra}


def task(tid, image, results, **extra):
    return {"id": tid, "data": {"image": image}, "annotations": [{"id": 100 + tid, "result": results, "was_cancelled": False}], "predictions": [], **extra}


def write(folder, tasks, name="export.json"):
    path = folder / name
    path.write_text(json.dumps(tasks))
    return path


@pytest.fixture
def ls_dir(tmp_path):
    solid(tmp_path / "photo.jpg", (200, 100))
    solid(tmp_path / "images" / "folder" / "b.png", (50, 40))
    solid(tmp_path / "c.png", (64, 48))
    return tmp_path


def test_percent_boxes_become_xyxy_pixels(ls_dir):
    tasks = [
        # uploaded file: the basename still carries Label Studio's 8-hex-digit prefix
        task(1, "/data/upload/1/abc123de-photo.jpg", [rect(10, 20, 30, 40), rect(50, 0, 50, 100, "dog", rid="r2")],
             predictions=[{"result": [rect(0, 0, 99, 99, "bird")]}]),  # never read
        task(2, "/data/local-files/?d=folder/b.png", [rect(0, 0, 50, 50, "dog", size=(50, 40))]),
        task(3, "c.png", []),  # submitted with no rectangles: a negative image
    ]
    ds = read_label_studio(write(ls_dir, tasks))
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    a, b, c = ds.samples
    # by hand: x1 = 10/100*200 = 20, y1 = 20/100*100 = 20, x2 = (10+30)/100*200 = 80, y2 = (20+40)/100*100 = 60
    np.testing.assert_allclose(a.boxes, [[20, 20, 80, 60], [100, 0, 200, 100]])
    assert a.labels == ["cat", "dog"] and a.image_path == ls_dir / "photo.jpg" and a.image_wh == (200, 100)
    np.testing.assert_allclose(b.boxes, [[0, 0, 25, 20]])
    assert b.image_path == ls_dir / "images" / "folder" / "b.png"
    assert len(c.boxes) == 0 and c.meta["label_studio_task_id"] == 3
    assert a.id == "export.json#1" and "task 1" in a.source and ds.report.boxes == 3 and not ds.report.skipped


def test_same_boxes_as_read_coco_of_the_same_annotation(ls_dir):
    ds = read_label_studio(write(ls_dir, [task(1, "photo.jpg", [rect(10, 20, 30, 40), rect(50, 0, 50, 100, "dog", rid="r2")])]))
    coco = read_coco(write_coco(ls_dir, [{"id": 1, "file_name": "photo.jpg", "width": 200, "height": 100}],
                                [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 60, 40]},
                                 {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 0, 100, 100]}]))
    np.testing.assert_allclose(ds[0].boxes, coco[0].boxes)
    assert ds[0].labels == coco[0].labels and ds[0].image_wh == coco[0].image_wh


def test_json_min_export(ls_dir):
    records = [
        {"image": "/data/upload/3/0123abcd-photo.jpg", "id": 7, "label": [{**rect(10, 20, 30, 40)["value"], "original_width": 200, "original_height": 100}],
         "annotator": 1, "annotation_id": 9},
        {"image": "/data/upload/3/0123abcd-photo.jpg", "id": 7, "label": [], "annotator": 2, "annotation_id": 10},  # 2nd annotation of 7
        {"image": "c.png", "id": 8, "annotator": 1, "annotation_id": 11},  # no rectangles: negative
    ]
    path = write(ls_dir, records, "min.json")
    assert is_label_studio(path)
    ds = read_label_studio(path)
    assert len(ds) == 2 and ds.classes == ["cat"]
    np.testing.assert_allclose(ds[0].boxes, [[20, 20, 80, 60]])
    assert len(ds[1].boxes) == 0


def test_first_annotation_not_cancelled_is_used(ls_dir):
    t = task(1, "photo.jpg", [])
    t["annotations"] = [{"id": 1, "was_cancelled": True, "result": [rect(0, 0, 10, 10, "bird")]},
                        {"id": 2, "result": [rect(10, 20, 30, 40)]}, {"id": 3, "result": [rect(0, 0, 50, 50, "dog")]}]
    ds = read_label_studio(write(ls_dir, [t]))
    assert ds[0].labels == ["cat"] and ds.classes == ["cat"]


def test_unannotated_tasks_are_left_out_and_counted(ls_dir):
    t2 = task(2, "c.png", [])
    t2["annotations"][0]["was_cancelled"] = True
    tasks = [task(1, "photo.jpg", [rect(10, 20, 30, 40)]), t2, {"id": 3, "data": {"image": "c.png"}, "annotations": [], "predictions": [{"result": [rect(1, 1, 5, 5)]}]}]
    ds = read_label_studio(write(ls_dir, tasks))
    assert len(ds) == 1 and ds.report.unannotated == 2 and not ds.report.skipped
    assert "2 tasks not labelled yet left out" in ds.report.summary()


def test_non_rectangle_results_are_skipped(ls_dir):
    polygon = {"id": "p", "type": "polygonlabels", "value": {"points": [[1, 1], [5, 5], [1, 5]], "polygonlabels": ["cat"]}}
    choice = {"id": "c", "type": "choices", "value": {"choices": ["day"]}}
    ds = read_label_studio(write(ls_dir, [task(1, "photo.jpg", [polygon, rect(10, 20, 30, 40), choice])]))
    assert ds[0].labels == ["cat"] and len(ds[0].boxes) == 1


def test_rectangle_plus_labels_config_and_multi_label_boxes(ls_dir):
    region = {"id": "r", "type": "labels", "original_width": 200, "original_height": 100,
              "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "labels": ["cat"]}}
    bare = {"id": "r", "type": "rectangle", "original_width": 200, "original_height": 100, "value": {"x": 10, "y": 20, "width": 30, "height": 40}}
    ds = read_label_studio(write(ls_dir, [task(1, "photo.jpg", [bare, region, rect(0, 0, 10, 10, ["dog", "pet"], rid="m")])]))
    np.testing.assert_allclose(ds[0].boxes, [[20, 20, 80, 60], [0, 0, 20, 10], [0, 0, 20, 10]])
    assert ds[0].labels == ["cat", "dog", "pet"]


def test_without_original_size_percent_scales_with_the_image(ls_dir):
    ds = read_label_studio(write(ls_dir, [task(1, "photo.jpg", [rect(10, 20, 30, 40, size=None)])]))
    np.testing.assert_allclose(ds[0].boxes, [[20, 20, 80, 60]])


def test_rotated_rectangle_is_refused_naming_file_task_and_result(ls_dir):
    path = write(ls_dir, [task(5, "photo.jpg", [rect(10, 20, 30, 40, rid="Dx_aB91ISN", rotation=15)])])
    with pytest.raises(DataError, match=r"export\.json, task 5, result Dx_aB91ISN: the rectangle is rotated by 15 degrees.*axis-aligned.*"
                       r"without changing what it covers.*Remove the rotation"):
        read_label_studio(path)
    ok = write(ls_dir, [task(5, "photo.jpg", [rect(10, 20, 30, 40, rotation=360)])])
    assert len(read_label_studio(ok)[0].boxes) == 1  # a full turn is no rotation
    # the image itself turned in the editor (the result's image_rotation): its percent coordinates are of the turned image
    turned = write(ls_dir, [task(6, "photo.jpg", [rect(10, 20, 30, 40, rid="r9", image_rotation=90)])])
    with pytest.raises(DataError, match=r"task 6, result r9: the image is rotated by 90 degrees \(image_rotation\)"):
        read_label_studio(turned)


def test_url_not_found_locally_tells_to_download(ls_dir):
    path = write(ls_dir, [task(4, "https://example.com/data/zebra.jpg", [rect(10, 20, 30, 40)])])
    with pytest.raises(DataError, match=r"task 4: image 'https://example\.com/data/zebra\.jpg' is a URL.*download the images and pass images="):
        read_label_studio(path)
    solid(ls_dir / "downloaded" / "zebra.jpg", (200, 100))
    ds = read_label_studio(path, images=ls_dir / "downloaded")
    assert ds[0].image_path == ls_dir / "downloaded" / "zebra.jpg"


def test_local_paths_as_imported(ls_dir):
    tasks = [task(1, (ls_dir / "photo.jpg").as_uri(), []), task(2, str(ls_dir / "c.png"), []), task(3, "folder/b.png", [])]
    ds = read_label_studio(write(ls_dir, tasks))
    assert [s.image_path for s in ds] == [ls_dir / "photo.jpg", ls_dir / "c.png", ls_dir / "images" / "folder" / "b.png"]


def test_bad_tasks_name_the_task_and_skip_counts(ls_dir):
    tasks = [
        task(1, "missing.png", [rect(10, 20, 30, 40)]),
        task(2, "photo.jpg", [rect("10", 20, 30, 40)]),
        task(3, "c.png", [rect(10, 20, 30, 40, size=(64, 48))]),
        task(4, "photo.jpg", [rect(10, 20, 30, 40, label=[])]),
        task(5, "c.png", [rect(10, 20, 30, 40, size=(64, 48))]),  # c.png again
        "junk",
    ]
    path = write(ls_dir, tasks)
    with pytest.raises(DataError, match=r"export\.json, task 1: image file not found for 'missing\.png'"):
        read_label_studio(path)
    ds = read_label_studio(path, options=ReadOptions(on_error="skip"))
    assert [s.meta["label_studio_task_id"] for s in ds] == [3]
    reasons = [r for _, r in ds.report.skipped]
    assert len(reasons) == 5
    assert "task 1: image file not found for 'missing.png'" in reasons[0]
    assert "task 2, result r1: x '10' is not a finite number" in reasons[1]
    assert "task 4, result r1: a rectangle without a label" in reasons[2]
    assert "task 5: image 'c.png' resolves to" in reasons[3] and "as task 3 does" in reasons[3]
    assert "task #5: a task is an object" in reasons[4]


def test_declared_size_must_match_and_closed_classes(ls_dir):
    with pytest.raises(DataError, match=r"task 1: the annotation says the image is 640x480"):
        read_label_studio(write(ls_dir, [task(1, "photo.jpg", [rect(10, 20, 30, 40, size=(640, 480))])]))
    path = write(ls_dir, [task(1, "photo.jpg", [rect(10, 20, 30, 40, "dog")])])
    with pytest.raises(UnknownClassError, match="unknown class 'dog'"):
        read_label_studio(path, options=ReadOptions(classes=["cat"], on_error="skip"))


def test_file_level_problems_and_sniffing(ls_dir, tmp_path):
    with pytest.raises(DataError, match="Label Studio export not found"):
        read_label_studio(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match=r"bad\.json: invalid JSON"):
        read_label_studio(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(DataError, match=r"obj\.json: a Label Studio JSON export is a list of tasks"):
        read_label_studio(tmp_path / "obj.json")
    assert is_label_studio(write(ls_dir, [task(1, "photo.jpg", [])]))
    assert is_label_studio(write(ls_dir, [{"data": {"image": "x.jpg"}}]))  # tasks as imported, not yet labelled
    write_coco(tmp_path, [], [])
    for name in ("annotations.json", "bad.json", "obj.json", "nope.json"):
        assert not is_label_studio(tmp_path / name)
    (tmp_path / "list.json").write_text(json.dumps([{"ref_id": 1, "sentences": []}]))
    assert not is_label_studio(tmp_path / "list.json")
