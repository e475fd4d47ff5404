"""``vlmdet metrics``: score a COCO results file against a COCO ground-truth file.

The figures are pycocotools' ``COCOeval`` (bbox) stats, unchanged; vlmdet only adds what
pycocotools refuses or hides: an empty results file scores 0 instead of raising, progress prints
are silenced, per-class AP is extracted, and bad inputs give one clear error.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from vlmdet.metrics.coco import load_results, per_class_ap, quiet_cocoeval

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def score_results_file(gt_path: str | Path, pred_path: str | Path) -> dict[str, Any]:
    """COCO bbox metrics of ``pred_path`` (``[{"image_id", "category_id", "bbox", "score"}]``)."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    for p in (gt_path, pred_path):
        if not p.is_file():
            raise FileNotFoundError(f"file not found: {p}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_path))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{gt_path}: not a COCO ground-truth file ({exc})") from None
    try:
        results = json.loads(pred_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{pred_path}: invalid JSON ({exc})") from None
    if not isinstance(results, list):
        raise ValueError(f"{pred_path}: a COCO results file is a JSON list of detections")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{pred_path}: detection {i} needs image_id, category_id, bbox [x, y, w, h] and score")
    unknown = {r["image_id"] for r in results} - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"{pred_path}: image ids {sorted(unknown)[:5]} are not in {gt_path}")
    dt = load_results(gt, results)
    ev = quiet_cocoeval(gt, dt)
    stats = dict(zip(STAT_NAMES, (float(s) for s in ev.stats)))
    names = {c["id"]: c["name"] for c in gt.dataset.get("categories", [])}
    return {
        **stats,
        "per_class_ap": per_class_ap(ev, names),
        "n_images": len(gt.getImgIds()),
        "n_gt": sum(1 for a in gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)),
        "n_pred": len(results),
    }
