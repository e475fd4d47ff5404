"""Annotated images, drawn with supervision's annotators: ground truth (green) and predictions.

Boxes are xyxy pixels of the original image; small images are shown upscaled (nearest neighbour)
so a 100-pixel synthetic image stays readable in a report.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GT_COLOUR, PRED_COLOUR = (0, 170, 0), (230, 30, 30)
COLUMN_COLOURS = ((230, 30, 30), (30, 90, 230), (200, 120, 0), (150, 0, 200))


def draw_boxes(image: Image.Image, boxes: np.ndarray, labels: Sequence[str], colour: tuple[int, int, int], width: int = 2,
               scores: Sequence[float] | None = None) -> Image.Image:
    """``(n, 4)`` xyxy pixel boxes with their labels (and scores) drawn on a copy of ``image``."""
    with warnings.catch_warnings():  # supervision's note that OpenCV is absent: its NumPy backend draws the same
        warnings.simplefilter("ignore")
        import supervision as sv

    out = image.convert("RGB").copy()
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if not len(boxes):
        return out
    color = sv.Color(*colour)
    detections = sv.Detections(xyxy=boxes, class_id=np.zeros(len(boxes), dtype=int))
    text = [f"{label} {s:.2f}" if scores is not None else str(label) for label, s in zip(labels, scores if scores is not None else [0.0] * len(labels))]
    out = sv.BoxAnnotator(color=color, thickness=width).annotate(out, detections)
    scale = max(0.3, min(out.size) / 400)
    return sv.LabelAnnotator(color=color, text_scale=scale, text_padding=2, smart_position=True).annotate(out, detections, labels=text)


def upscale(image: Image.Image, boxes_list: Sequence[np.ndarray], target: int = 320) -> tuple[Image.Image, list[np.ndarray], int]:
    """Small images enlarged by an integer factor (nearest) to about ``target`` pixels, boxes with them."""
    w, h = image.size
    s = max(1, target // max(w, h))
    big = image.resize((w * s, h * s), Image.NEAREST) if s > 1 else image
    return big, [np.asarray(b, dtype=float).reshape(-1, 4) * s for b in boxes_list], s


def side_by_side(image: Image.Image, panels: Sequence[tuple[str, np.ndarray, Sequence[str], Sequence[float] | None, tuple[int, int, int]]]) -> Image.Image:
    """One copy of ``image`` per panel ``(title, boxes, labels, scores, colour)``, left to right, titled."""
    big, scaled, _ = upscale(image, [p[1] for p in panels])
    w, h = big.size
    canvas = Image.new("RGB", (len(panels) * (w + 8) - 8, h + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for k, ((title, _, labels, scores, colour), boxes) in enumerate(zip(panels, scaled)):
        canvas.paste(draw_boxes(big, boxes, labels, colour, scores=scores), (k * (w + 8), 16))
        draw.text((k * (w + 8) + 2, 2), title, fill=colour)
    return canvas


def gt_vs_pred(image: Image.Image, gt_boxes, gt_labels, pred_boxes, pred_labels, scores=None) -> Image.Image:
    """Side by side: ground truth left, prediction right."""
    return side_by_side(image, [("ground truth", gt_boxes, gt_labels, None, GT_COLOUR), ("prediction", pred_boxes, pred_labels, scores, PRED_COLOUR)])


def save_annotated(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
