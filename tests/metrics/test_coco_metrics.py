"""mAP equals pycocotools' COCOeval to 1e-6 on generated cases: images without ground truth,
crowd regions, categories without ground truth, duplicate predictions, empty prediction files."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vlmdet.cli import main
from vlmdet.metrics import DetectionMetrics
from vlmdet.metrics.cocofile import STAT_NAMES, score_results_file

CATS = ["cat", "dog", "bird", "fish"]  # "fish" never has ground truth


def make_case(seed: int, empty_preds: bool = False):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, int(rng.integers(3, 9)) + 1):
        w, h = int(rng.integers(50, 400)), int(rng.integers(50, 400))
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.png"})
        n_gt = 0 if rng.random() < 0.2 else int(rng.integers(1, 6))  # some images without ground truth
        gts = []
        for _ in range(n_gt):
            x, y = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            bw, bh = rng.uniform(4, w - x), rng.uniform(4, h - y)
            cat = int(rng.integers(1, 4))  # 1..3, never 4
            crowd = int(rng.random() < 0.1)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd})
            gts.append((x, y, bw, bh, cat))
        if empty_preds:
            continue
        for x, y, bw, bh, cat in gts:  # noisy copies of the truth, sometimes with the wrong class
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.1, 4) * [bw, bh, bw, bh]
                c = cat if rng.random() < 0.85 else int(rng.integers(1, 5))
                box = [max(0.0, x + jitter[0]), max(0.0, y + jitter[1]), max(1.0, bw + jitter[2]), max(1.0, bh + jitter[3])]
                dets.append({"image_id": img_id, "category_id": c, "bbox": box, "score": float(rng.choice([1.0, rng.random()]))})
                if rng.random() < 0.2:  # duplicate prediction
                    dets.append(dict(dets[-1]))
        for _ in range(int(rng.integers(0, 3))):  # false positives, some of a class with no ground truth
            x, y = rng.uniform(0, w - 5), rng.uniform(0, h - 5)
            dets.append({"image_id": img_id, "category_id": int(rng.integers(1, 5)), "bbox": [x, y, rng.uniform(2, w - x), rng.uniform(2, h - y)], "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATS)]}
    return gt, dets


def reference_stats(gt_path, dets) -> np.ndarray:
    """pycocotools, the reference way (an empty result set gets an empty COCO, as loadRes cannot)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.array(ev.stats)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("empty", [False, True])
def test_results_file_scoring_equals_pycocotools(tmp_path, seed, empty):
    gt, dets = make_case(seed, empty_preds=empty)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    ours = score_results_file(tmp_path / "gt.json", tmp_path / "res.json")
    ref = reference_stats(tmp_path / "gt.json", dets)
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], ref, atol=1e-6)
    assert ours["per_class_ap"]["fish"] == -1.0  # no ground truth: undefined, as COCOeval says


@pytest.mark.parametrize("bbox", [[30, 30, -20, 10], [30, 30, 10, -20]])
def test_a_results_box_with_a_negative_side_is_refused_as_corner_format(tmp_path, bbox):
    gt, dets = make_case(0)
    dets = [{**dets[0], "bbox": bbox}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    with pytest.raises(ValueError, match=r"detection 0: bbox .* has a negative width or height — is it \[x1, y1, x2, y2\]\?"):
        score_results_file(tmp_path / "gt.json", tmp_path / "res.json")


@pytest.mark.parametrize("seed", range(30))
def test_detection_metrics_from_samples_equal_pycocotools(tmp_path, seed):
    """The update/compute path (xyxy boxes + class names, as vlmdet eval feeds it) gives the same mAP."""
    gt, dets = make_case(seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ref = reference_stats(tmp_path / "gt.json", dets)
    metrics = DetectionMetrics(CATS)
    name = {i + 1: n for i, n in enumerate(CATS)}
    for im in gt["images"]:
        g = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        d = [x for x in dets if x["image_id"] == im["id"]]
        xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
        metrics.update(
            (im["width"], im["height"]),
            np.array([xyxy(a["bbox"]) for a in g]).reshape(-1, 4),
            [name[a["category_id"]] for a in g],
            np.array([xyxy(x["bbox"]) for x in d]).reshape(-1, 4),
            [name[x["category_id"]] for x in d],
            confidences=[x["score"] for x in d],
            iscrowd=np.array([a["iscrowd"] for a in g], dtype=bool),
        )
    r = metrics.compute().by_score["geometric_mean"]
    for name, index in (("map", 0), ("map50", 1), ("map75", 2), ("map_small", 3), ("map_medium", 4), ("map_large", 5), ("ar100", 8)):
        assert r[name] == pytest.approx(ref[index], abs=1e-6), name


def test_metrics_command_prints_json(tmp_path, capsys):
    gt, dets = make_case(3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    assert main(["metrics", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["map"] == pytest.approx(reference_stats(tmp_path / "gt.json", dets)[0], abs=1e-6)


def test_metrics_command_bad_input(tmp_path, capsys):
    gt, _ = make_case(1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    assert main(["metrics", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json")]) == 2
    assert "image id 999 is not in" in capsys.readouterr().err
    (tmp_path / "res.json").write_text('{"not": "a list"}')
    assert main(["metrics", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json")]) == 2


def test_mean_iou_and_grounding_accuracy():
    m = DetectionMetrics(None)  # grounding: one class, Acc@0.5 on the first box
    m.update((100, 100), np.array([[0, 0, 10, 10]]), ["the cat"], np.array([[0, 0, 10, 20]]), ["the cat"])  # IoU 0.5
    m.update((100, 100), np.array([[50, 50, 60, 60]]), ["a dog"], np.zeros((0, 4)), [], parse_failed=True)
    r = m.compute()
    assert r.acc50 == 0.5 and r.mean_iou == pytest.approx(0.5) and r.parse_failure_rate == 0.5


@pytest.mark.parametrize("seed", range(10))
def test_per_class_ap_equals_cocoeval_run_on_that_category_alone(tmp_path, seed):
    gt, dets = make_case(seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    ours = score_results_file(tmp_path / "gt.json", tmp_path / "res.json")["per_class_ap"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        dt = coco.loadRes(dets) if dets else None
    for cat in gt["categories"]:
        if dt is None:
            break
        ev = COCOeval(coco, dt, "bbox")
        ev.params.catIds = [cat["id"]]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ours[cat["name"]] == pytest.approx(ev.stats[0], abs=1e-9), cat["name"]


def test_mean_iou_counts_one_to_one_same_class_pairs_above_the_threshold_only():
    m = DetectionMetrics(["cat", "dog"])
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], float)
    pred = np.array([
        [0, 0, 10, 8],      # cat on cat: IoU 0.8, counted
        [0, 0, 10, 6],      # a second cat on the same cat: IoU 0.6, one-to-one, not counted
        [20, 20, 30, 24],   # cat on cat: IoU 0.4 < 0.5, not counted
        [40, 40, 50, 50],   # dog on a cat: IoU 1, wrong class, not counted
        [60, 60, 70, 70],   # cat on the crowd region: excluded
    ], float)
    m.update((100, 100), gt, ["cat", "cat", "cat", "cat"], pred, ["cat", "cat", "cat", "dog", "cat"], iscrowd=np.array([False, False, False, True]))
    m.update((100, 100), gt[:1], ["dog"], gt[:1] + [0, 0, 0, -5], ["dog"])  # IoU 0.5 exactly: counted
    assert m.compute().mean_iou == pytest.approx((0.8 + 0.5) / 2)
