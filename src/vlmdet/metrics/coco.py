"""Detection metrics over a whole split: COCO mAP by pycocotools' ``COCOeval``, and what AP leaves out.

:class:`DetectionMetrics` is an update/compute object (supervision style): ``update`` once per
image with ground truth and predictions in original pixels, ``compute`` once for the split. The
mAP figures are pycocotools' own (vlmdet builds the COCO ground truth and detections and runs
``COCOeval``), so they equal any other pycocotools evaluation of the same boxes.

Scores: VLMs write boxes, not confidences. AP is computed twice when the predictor measured a
confidence per box (``confidences``, e.g. from token probabilities): with every box at score 1.0
(``score_kind: constant`` — COCOeval keeps the model's own listing order, its sort is stable, so AP
is the single operating point a user gets) and with the confidences (``by_score[kind]``, a real
ranking). Beyond AP, from one optimal one-to-one matching (:mod:`vlmdet.metrics.matching`, shared
with the RL rewards):

* precision / recall / F1 at IoU 0.5 and 0.95 over the split (micro-averaged counts);
* mean IoU of the same-label matches at IoU 0.5;
* duplicate rate: boxes repeating an earlier box of the same label (IoU > 0.9), per predicted box;
* hallucinated labels: predicted boxes whose label is not on any ground-truth box of that image;
* count error: mean |predicted boxes - true boxes| per image;
* label confusion: boxes placed right (class-agnostic match at IoU 0.5) but labelled wrong, as
  ``confusion[true label][predicted label]``.

Crowd regions are not targets: they are never matched, and a prediction that falls on one (IoU >= 0.5,
same label) counts neither as a hit nor as a false positive, as COCOeval ignores it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vlmdet.metrics.iou import box_iou
from vlmdet.metrics.matching import duplicates, match, precision_recall_f1

AP_FIELDS = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar100")
STAT_INDEX = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "ar100": 8}


@dataclass
class DetectionResult:
    """Metrics of one split. mAP values are in [0, 1]; -1 means "undefined" (no ground truth).

    The AP fields use constant scores (``score_kind``); ``by_score`` holds the AP fields computed
    with the confidences the predictor measured, under the name of how they were computed from the
    token probabilities — the ``confidence`` setting (e.g. ``by_score["geometric_mean"]["map50"]``).
    """

    map: float
    map50: float
    map75: float
    ar100: float
    map_small: float
    map_medium: float
    map_large: float
    per_class_ap: dict[str, float]
    mean_iou: float
    acc50: float
    parse_failure_rate: float
    preds_per_image: float
    n_images: int
    n_gt: int
    n_pred: int
    unknown_label_preds: int
    score_kind: str = "constant"
    precision50: float = 0.0
    recall50: float = 0.0
    f1_50: float = 0.0
    precision95: float = 0.0
    recall95: float = 0.0
    f1_95: float = 0.0
    duplicate_rate: float = 0.0
    hallucinated_rate: float = 0.0
    count_error: float = 0.0
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    by_score: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quiet_cocoeval(gt: COCO, dt: COCO, iou_type: str = "bbox") -> COCOeval:
    """Run evaluate/accumulate/summarize with pycocotools' printing silenced."""
    ev = COCOeval(gt, dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_from_dict(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """``gt.loadRes`` that accepts an empty list (pycocotools refuses one) and stays quiet."""
    if not results:
        empty = {k: gt.dataset[k] for k in ("images", "categories")}
        empty["annotations"] = []
        return coco_from_dict(empty)
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(results)


def per_class_ap(ev: COCOeval, cat_names: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] per category from an accumulated COCOeval (area all, maxDets 100)."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        out[cat_names[cat_id]] = float(valid.mean()) if valid.size else -1.0
    return out


class DetectionMetrics:
    """Accumulate ground truth and predictions image by image; ``compute()`` the split's metrics.

    Args:
        classes: closed class set; predictions with other labels are not scored by AP (counted in
            ``unknown_label_preds``, and as hallucinated labels). ``None`` for grounding: every box is
            one class, and ``acc50`` is the share of images whose first predicted box has IoU >= 0.5
            with a ground-truth box.
        confidence_kind: the name under ``by_score`` of the confidences passed to :meth:`update`: the
            ``confidence`` setting they were computed with (``geometric_mean`` | ``min`` | ``mean`` | ``product``).
    """

    def __init__(self, classes: Sequence[str] | None, confidence_kind: str = "geometric_mean") -> None:
        self.grounding = classes is None
        self.classes = ["object"] if classes is None else list(classes)
        self.cat_id = {name: i + 1 for i, name in enumerate(self.classes)}
        self.confidence_kind = confidence_kind
        self.images: list[dict[str, Any]] = []
        self.gt: list[dict[str, Any]] = []
        self.dt: list[dict[str, Any]] = []
        self.failed = 0
        self.unknown = 0
        self.ious: list[float] = []
        self.top1_hits = 0
        self.has_confidence = False
        self.counts = dict.fromkeys(("tp50", "tp95", "n_pred", "n_gt", "ignored50", "ignored95", "duplicates", "hallucinated", "count_error"), 0)
        self.confusion: dict[str, dict[str, int]] = {}

    def update(
        self,
        image_wh: tuple[int, int],
        gt_boxes: np.ndarray,
        gt_labels: Sequence[str],
        pred_boxes: np.ndarray,
        pred_labels: Sequence[str],
        confidences: Sequence[float] | None = None,
        iscrowd: np.ndarray | None = None,
        parse_failed: bool = False,
    ) -> None:
        """Add one image. Boxes are ``(n, 4)`` xyxy pixels of the original image, predictions in the
        order the model wrote them; ``confidences`` one per predicted box, if measured. ``iscrowd``
        marks ground truth that is ignored (COCO crowd regions, VOC ``difficult`` objects:
        ``Sample.ignored``): a prediction on it is neither a hit nor a false positive."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "width": int(image_wh[0]), "height": int(image_wh[1])})
        gt_boxes = np.asarray(gt_boxes, dtype=float).reshape(-1, 4)
        pred_boxes = np.asarray(pred_boxes, dtype=float).reshape(-1, 4)
        crowd = np.zeros(len(gt_boxes), bool) if iscrowd is None else np.asarray(iscrowd, bool)
        raw_pred_labels = list(pred_labels)
        gt_labels = ["object"] * len(gt_boxes) if self.grounding else list(gt_labels)
        pred_labels = ["object"] * len(pred_boxes) if self.grounding else raw_pred_labels
        if confidences is not None:
            self.has_confidence = True
        conf = [1.0] * len(pred_boxes) if confidences is None else [float(c) for c in confidences]
        for box, label, c in zip(gt_boxes, gt_labels, crowd):
            if label not in self.cat_id:
                raise ValueError(f"ground-truth label {label!r} is not one of the evaluated classes {self.classes}")
            x1, y1, x2, y2 = box
            self.gt.append(
                {
                    "id": len(self.gt) + 1,
                    "image_id": image_id,
                    "category_id": self.cat_id[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(c),
                }
            )
        for box, label, score in zip(pred_boxes, pred_labels, conf):
            if label not in self.cat_id:
                self.unknown += 1
                continue
            x1, y1, x2, y2 = box
            self.dt.append({"image_id": image_id, "category_id": self.cat_id[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "confidence": score})
        self.failed += int(parse_failed)
        self._count(gt_boxes[~crowd], [lab for lab, c in zip(gt_labels, crowd) if not c], gt_boxes[crowd],
                    [lab for lab, c in zip(gt_labels, crowd) if c], pred_boxes, pred_labels)
        if self.grounding and len(gt_boxes):
            self.top1_hits += int(len(pred_boxes) > 0 and box_iou(pred_boxes[:1], gt_boxes[~crowd]).max(initial=0.0) >= 0.5)

    def _count(self, gt, gt_labels, crowd, crowd_labels, pred, pred_labels) -> None:
        """Matching-based figures for one image (crowd regions already split off)."""
        c = self.counts
        c["n_pred"] += len(pred)
        c["n_gt"] += len(gt)
        c["count_error"] += abs(len(pred) - len(gt))
        c["duplicates"] += len(duplicates(pred, pred_labels))
        present = set(gt_labels) | set(crowd_labels)
        c["hallucinated"] += sum(1 for label in pred_labels if label not in present)
        for thr, key in ((0.5, "50"), (0.95, "95")):
            pairs = match(pred, pred_labels, gt, gt_labels, thr)
            c["tp" + key] += len(pairs)
            if thr == 0.5:
                self.ious += [p.iou for p in pairs]
            matched = {p.pred for p in pairs}
            rest = [i for i in range(len(pred)) if i not in matched]
            if rest and len(crowd):  # on a crowd region: neither a hit nor a false positive
                c["ignored" + key] += len(match(pred[rest], [pred_labels[i] for i in rest], crowd, crowd_labels, 0.5))
        for p in match(pred, pred_labels, gt, gt_labels, 0.5, same_label=False):
            truth, said = gt_labels[p.gt], pred_labels[p.pred]
            if truth != said:
                row = self.confusion.setdefault(truth, {})
                row[said] = row.get(said, 0) + 1

    def _ap(self, gt: COCO, use_confidence: bool) -> tuple[list[float], dict[str, float]]:
        dets = [{**{k: v for k, v in d.items() if k != "confidence"}, "score": d["confidence"] if use_confidence else 1.0} for d in self.dt]
        ev = quiet_cocoeval(gt, load_results(gt, dets))
        return [float(s) for s in ev.stats], per_class_ap(ev, {i: name for name, i in self.cat_id.items()})

    def compute(self) -> DetectionResult:
        n = len(self.images)
        categories = [{"id": i, "name": name} for name, i in self.cat_id.items()]
        gt = coco_from_dict({"images": self.images, "annotations": self.gt, "categories": categories})
        stats = [-1.0] * 12
        pcap = {name: -1.0 for name in self.classes}
        by_score: dict[str, dict[str, Any]] = {}
        if n and any(a["iscrowd"] == 0 for a in self.gt):
            stats, pcap = self._ap(gt, use_confidence=False)
            if self.has_confidence:
                conf_stats, conf_pcap = self._ap(gt, use_confidence=True)
                by_score[self.confidence_kind] = {**{k: conf_stats[i] for k, i in STAT_INDEX.items()}, "per_class_ap": conf_pcap}
        c = self.counts
        scored = c["n_pred"]
        p50, r50, f50 = precision_recall_f1(c["tp50"], scored - c["ignored50"], c["n_gt"])
        p95, r95, f95 = precision_recall_f1(c["tp95"], scored - c["ignored95"], c["n_gt"])
        return DetectionResult(
            **{k: stats[i] for k, i in STAT_INDEX.items()},
            per_class_ap=pcap,
            mean_iou=float(np.mean(self.ious)) if self.ious else 0.0,
            acc50=(self.top1_hits / n) if (self.grounding and n) else -1.0,
            parse_failure_rate=(self.failed / n) if n else 0.0,
            preds_per_image=(scored / n) if n else 0.0,
            n_images=n,
            n_gt=c["n_gt"],
            n_pred=len(self.dt),
            unknown_label_preds=self.unknown,
            precision50=p50, recall50=r50, f1_50=f50,
            precision95=p95, recall95=r95, f1_95=f95,
            duplicate_rate=c["duplicates"] / scored if scored else 0.0,
            hallucinated_rate=c["hallucinated"] / scored if scored else 0.0,
            count_error=c["count_error"] / n if n else 0.0,
            confusion=self.confusion,
            by_score=by_score,
        )
