"""Metrics: COCO mAP over a whole split (pycocotools), F1, duplicates and confusion from one shared
optimal matching, IoU."""

from vlmdet.metrics.coco import DetectionMetrics, DetectionResult
from vlmdet.metrics.iou import box_iou
from vlmdet.metrics.matching import Pair, duplicates, match, precision_recall_f1

__all__ = ["DetectionMetrics", "DetectionResult", "Pair", "box_iou", "duplicates", "match", "precision_recall_f1"]
