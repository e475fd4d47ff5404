"""Annotated images: ground truth (green) and predictions (red) drawn on the original image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GT_COLOUR, PRED_COLOUR = (0, 200, 0), (230, 30, 30)


def draw_boxes(image: Image.Image, boxes: np.ndarray, labels: Sequence[str], colour: tuple[int, int, int], width: int = 2) -> Image.Image:
    """Draw ``(n, 4)`` xyxy pixel boxes with their labels on a copy of ``image``."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes).reshape(-1, 4), labels):
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        tx, ty = x1 + 2, max(0, y1 - 11)
        draw.rectangle([tx - 1, ty, tx + 6 * len(label) + 1, ty + 10], fill=colour)
        draw.text((tx, ty - 1), label, fill=(255, 255, 255))
    return out


def gt_vs_pred(image: Image.Image, gt_boxes, gt_labels, pred_boxes, pred_labels, scale: int = 2) -> Image.Image:
    """Side by side: ground truth left, prediction right (upscaled small images for readability)."""
    w, h = image.size
    s = max(1, min(scale, 640 // max(w, h) or 1))
    big = image.resize((w * s, h * s), Image.NEAREST)
    left = draw_boxes(big, np.asarray(gt_boxes).reshape(-1, 4) * s, gt_labels, GT_COLOUR)
    right = draw_boxes(big, np.asarray(pred_boxes).reshape(-1, 4) * s, pred_labels, PRED_COLOUR)
    canvas = Image.new("RGB", (w * s * 2 + 8, h * s + 14), "white")
    canvas.paste(left, (0, 14))
    canvas.paste(right, (w * s + 8, 14))
    d = ImageDraw.Draw(canvas)
    d.text((2, 1), "ground truth", fill=GT_COLOUR)
    d.text((w * s + 10, 1), "prediction", fill=PRED_COLOUR)
    return canvas


def save_annotated(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
