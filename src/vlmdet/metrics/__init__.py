"""Metrics: COCO mAP over a whole split (pycocotools), IoU, matching."""

from vlmdet.metrics.coco import DetectionMetrics, DetectionResult
from vlmdet.metrics.iou import box_iou, greedy_match

__all__ = ["DetectionMetrics", "DetectionResult", "box_iou", "greedy_match"]
