"""COCO detection metrics over a whole split, computed by pycocotools' ``COCOeval``.

:class:`DetectionMetrics` is an update/compute object (supervision style): ``update`` once per
image with ground truth and predictions in original pixels, ``compute`` once for the split. The
mAP figures are pycocotools' own (vlmdet builds the COCO ground truth and detections and runs
``COCOeval``), so they equal any other pycocotools evaluation of the same boxes.

Scores: VLMs emit boxes, not confidences. By default every box gets score 1.0 and COCOeval keeps
the model's own listing order (its sort is stable), so AP measures the single operating point a
user actually gets. A caller that has a better confidence (e.g. token log-probabilities) passes
``scores`` and names it in ``score_kind``.
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

from vlmdet.metrics.iou import box_iou, greedy_match


@dataclass
class DetectionResult:
    """Metrics of one split. mAP values are in [0, 1]; -1 means "undefined" (no ground truth)."""

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
    """Accumulate ground truth and predictions image by image; ``compute()`` COCO metrics.

    Args:
        classes: closed class set; predictions with other labels are not scored (counted in
            ``unknown_label_preds``). ``None`` for grounding: every box is one class, and
            ``acc50`` is the share of images whose first predicted box has IoU >= 0.5 with a GT box.
    """

    def __init__(self, classes: Sequence[str] | None, score_kind: str = "constant") -> None:
        self.grounding = classes is None
        self.classes = ["object"] if classes is None else list(classes)
        self.cat_id = {name: i + 1 for i, name in enumerate(self.classes)}
        self.score_kind = score_kind
        self.images: list[dict[str, Any]] = []
        self.gt: list[dict[str, Any]] = []
        self.dt: list[dict[str, Any]] = []
        self.failed = 0
        self.unknown = 0
        self.ious: list[float] = []
        self.top1_hits = 0

    def update(
        self,
        image_wh: tuple[int, int],
        gt_boxes: np.ndarray,
        gt_labels: Sequence[str],
        pred_boxes: np.ndarray,
        pred_labels: Sequence[str],
        scores: Sequence[float] | None = None,
        iscrowd: np.ndarray | None = None,
        parse_failed: bool = False,
    ) -> None:
        """Add one image. Boxes are ``(n, 4)`` xyxy pixels of the original image."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "width": int(image_wh[0]), "height": int(image_wh[1])})
        gt_boxes = np.asarray(gt_boxes, dtype=float).reshape(-1, 4)
        pred_boxes = np.asarray(pred_boxes, dtype=float).reshape(-1, 4)
        crowd = np.zeros(len(gt_boxes), bool) if iscrowd is None else np.asarray(iscrowd, bool)
        gt_labels = ["object"] * len(gt_boxes) if self.grounding else list(gt_labels)
        pred_labels = ["object"] * len(pred_boxes) if self.grounding else list(pred_labels)
        scores = [1.0] * len(pred_boxes) if scores is None else list(scores)
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
        for box, label, score in zip(pred_boxes, pred_labels, scores):
            if label not in self.cat_id:
                self.unknown += 1
                continue
            x1, y1, x2, y2 = box
            self.dt.append({"image_id": image_id, "category_id": self.cat_id[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        self.failed += int(parse_failed)
        # mean IoU of matched pairs (one-to-one, same class, IoU >= 0.5, crowd excluded)
        keep = ~crowd
        for cls in set(gt_labels):
            g = gt_boxes[keep & np.array([lab == cls for lab in gt_labels], dtype=bool)] if len(gt_boxes) else gt_boxes
            p = pred_boxes[[lab == cls for lab in pred_labels]] if len(pred_boxes) else pred_boxes
            self.ious += [iou for _, _, iou in greedy_match(box_iou(p, g), 0.5)]
        if self.grounding and len(gt_boxes):
            self.top1_hits += int(len(pred_boxes) > 0 and box_iou(pred_boxes[:1], gt_boxes[keep]).max(initial=0.0) >= 0.5)

    def compute(self) -> DetectionResult:
        n = len(self.images)
        categories = [{"id": i, "name": name} for name, i in self.cat_id.items()]
        gt = coco_from_dict({"images": self.images, "annotations": self.gt, "categories": categories})
        stats = [-1.0] * 12
        pcap = {name: -1.0 for name in self.classes}
        if n and any(a["iscrowd"] == 0 for a in self.gt):
            ev = quiet_cocoeval(gt, load_results(gt, self.dt))
            stats = [float(s) for s in ev.stats]
            pcap = per_class_ap(ev, {i: name for name, i in self.cat_id.items()})
        n_gt = sum(1 for a in self.gt if not a["iscrowd"])
        return DetectionResult(
            map=stats[0],
            map50=stats[1],
            map75=stats[2],
            map_small=stats[3],
            map_medium=stats[4],
            map_large=stats[5],
            ar100=stats[8],
            per_class_ap=pcap,
            mean_iou=float(np.mean(self.ious)) if self.ious else 0.0,
            acc50=(self.top1_hits / n) if (self.grounding and n) else -1.0,
            parse_failure_rate=(self.failed / n) if n else 0.0,
            preds_per_image=((len(self.dt) + self.unknown) / n) if n else 0.0,
            n_images=n,
            n_gt=n_gt,
            n_pred=len(self.dt),
            unknown_label_preds=self.unknown,
            score_kind=self.score_kind,
        )
