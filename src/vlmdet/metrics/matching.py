"""Matching predicted boxes to ground truth, written once: the metrics (F1, mean IoU, confusion) and
the RL rewards use these functions, so "a hit" means the same thing in a report and in a reward.

* :func:`match` — optimal one-to-one matching (Hungarian, ``scipy.optimize.linear_sum_assignment``):
  among pairs with IoU >= ``iou_threshold`` (and the same label, unless ``same_label=False``) it
  takes the largest number of matches, and among those the largest total IoU. A greedy "best IoU
  first" pass can take a pair that blocks two others; the assignment cannot.
* :func:`duplicates` — boxes repeating an earlier box of the same label (IoU above 0.9 by default).

Boxes are ``(n, 4)`` xyxy in one coordinate space (vlmdet: original-image pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from vlmdet.metrics.iou import box_iou


@dataclass(frozen=True)
class Pair:
    pred: int
    gt: int
    iou: float


def match(
    pred_boxes: np.ndarray,
    pred_labels: Sequence[str],
    gt_boxes: np.ndarray,
    gt_labels: Sequence[str],
    iou_threshold: float = 0.5,
    same_label: bool = True,
) -> list[Pair]:
    """Optimal one-to-one matches ``Pair(pred, gt, iou)`` with ``iou >= iou_threshold``, sorted by ``pred``.

    The assignment maximises the number of matches first, then their total IoU (each feasible pair
    weighs ``n + iou`` with ``n`` larger than any possible IoU total, so one more match always wins).
    """
    iou = box_iou(pred_boxes, gt_boxes)
    if iou.size == 0:
        return []
    feasible = iou >= iou_threshold
    if same_label:
        feasible &= np.asarray(pred_labels, dtype=object)[:, None] == np.asarray(gt_labels, dtype=object)[None, :]
    if not feasible.any():
        return []
    big = float(min(iou.shape) + 1)
    weight = np.where(feasible, big + iou, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return sorted((Pair(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols) if feasible[i, j]), key=lambda p: p.pred)


def duplicates(boxes: np.ndarray, labels: Sequence[str], iou_threshold: float = 0.9) -> list[int]:
    """Indices of boxes that repeat an *earlier* box of the same label (IoU > ``iou_threshold``)."""
    iou = box_iou(boxes, boxes)
    out = []
    for i in range(1, len(labels)):
        same = [j for j in range(i) if labels[j] == labels[i] and iou[i, j] > iou_threshold]
        if same:
            out.append(i)
    return out


def precision_recall_f1(tp: int, n_pred: int, n_gt: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; an empty side gives 1.0 when both are empty, else 0.0."""
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0, 1.0
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
