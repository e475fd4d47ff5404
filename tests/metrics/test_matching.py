"""The shared matching and what the metrics derive from it, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from vlmdet.metrics import DetectionMetrics, duplicates, match, precision_recall_f1


def B(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


def test_the_assignment_takes_more_matches_where_best_iou_first_would_block_one():
    # pred 0 overlaps both truths; taking its best (truth 0) first would leave pred 1 with nothing
    gt = B([0, 0, 10, 10], [6, 0, 16, 10])
    pred = B([3, 0, 13, 10], [0, 0, 9, 10])
    pairs = match(pred, ["a", "a"], gt, ["a", "a"], 0.5)
    assert [(p.pred, p.gt) for p in pairs] == [(0, 1), (1, 0)]
    assert match(pred, ["a", "b"], gt, ["a", "a"], 0.5)[0].pred == 0  # same label only
    assert len(match(pred, ["b", "b"], gt, ["a", "a"], 0.5, same_label=False)) == 2
    assert match(B(), [], gt, ["a", "a"]) == [] and match(pred, ["a", "a"], B(), []) == []


def test_duplicates_repeat_an_earlier_box_of_the_same_label():
    boxes = B([0, 0, 10, 10], [0, 0, 10, 10.5], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10])
    assert duplicates(boxes, ["a", "a", "b", "a", "a"]) == [1, 4]  # box 2 is another label; box 3 elsewhere


def test_precision_recall_f1_edges():
    assert precision_recall_f1(0, 0, 0) == (1.0, 1.0, 1.0)
    assert precision_recall_f1(0, 3, 0) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 0, 2) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(2, 4, 2) == pytest.approx((0.5, 1.0, 2 / 3))


def test_every_figure_of_one_hand_made_split():
    m = DetectionMetrics(["cat", "dog"])
    # image 1: cat found exactly, dog found at IoU 0.8, the cat written twice, a bird that is not there
    m.update((100, 100), B([0, 0, 10, 10], [20, 20, 30, 30]), ["cat", "dog"],
             B([0, 0, 10, 10], [20, 20, 30, 28], [0, 0, 10, 10], [50, 50, 60, 60]), ["cat", "dog", "cat", "bird"])
    # image 2: a dog boxed right but called a cat; one dog missed
    m.update((100, 100), B([0, 0, 10, 10], [40, 40, 50, 50]), ["dog", "dog"], B([0, 0, 10, 10]), ["cat"])
    # image 3: nothing there, nothing said
    m.update((100, 100), B(), [], B(), [])
    r = m.compute()
    # 5 predictions, 4 truths; at IoU 0.5: cat + dog of image 1 -> 2 hits; at 0.95: only the exact cat
    assert (r.precision50, r.recall50) == pytest.approx((2 / 5, 2 / 4)) and r.f1_50 == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert (r.precision95, r.recall95) == pytest.approx((1 / 5, 1 / 4))
    assert r.duplicate_rate == pytest.approx(1 / 5)
    assert r.hallucinated_rate == pytest.approx(2 / 5)  # the bird, and the cat in an image of dogs
    assert r.count_error == pytest.approx((2 + 1 + 0) / 3)
    assert r.confusion == {"dog": {"cat": 1}}
    assert r.mean_iou == pytest.approx((1.0 + 0.8) / 2)
    assert r.unknown_label_preds == 1 and r.n_pred == 4 and r.n_gt == 4 and r.preds_per_image == pytest.approx(5 / 3)


def test_a_prediction_on_a_crowd_region_is_neither_hit_nor_false_positive():
    m = DetectionMetrics(["person"])
    m.update((100, 100), B([0, 0, 10, 10], [50, 50, 90, 90]), ["person", "person"], B([0, 0, 10, 10], [52, 52, 90, 90]), ["person", "person"],
             iscrowd=np.array([False, True]))
    r = m.compute()
    assert (r.precision50, r.recall50, r.f1_50) == (1.0, 1.0, 1.0) and r.n_gt == 1


def test_confidences_give_a_second_ap_that_ranks_the_boxes():
    m = DetectionMetrics(["cat"])
    # a false positive listed first: at constant scores it ranks first; a low confidence puts it last
    m.update((100, 100), B([0, 0, 10, 10]), ["cat"], B([50, 50, 60, 60], [0, 0, 10, 10]), ["cat", "cat"], confidences=[0.1, 0.9])
    r = m.compute()
    assert r.score_kind == "constant" and r.map50 == pytest.approx(0.5, abs=0.01)
    assert r.by_score["geometric_mean"]["map50"] == pytest.approx(1.0)
    assert DetectionMetrics(["cat"]).compute().by_score == {}
