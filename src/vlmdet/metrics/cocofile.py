"""``vlmdet metrics``: score a COCO results file against a COCO ground-truth file.

The figures are pycocotools' ``COCOeval`` (bbox) stats, unchanged; vlmdet only adds what
pycocotools refuses or hides: an empty results file scores 0 instead of raising, progress prints
are silenced, per-class AP is extracted, and bad inputs give one clear error naming the file and the
detection — pycocotools would crash with an assertion, or worse, score them: a category id the
ground truth does not have counts for nothing, and a box of negative width or height (the usual
sign of ``[x1, y1, x2, y2]`` written where COCO wants ``[x, y, w, h]``) is matched as if it were a box.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from vlmdet.metrics.coco import load_results, per_class_ap, quiet_cocoeval

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def check_results(results: Any, gt: COCO, pred_path: Path, gt_path: Path) -> None:
    """Each detection: known image and category ids, a finite ``[x, y, w, h]`` with w, h >= 0, a finite score."""
    if not isinstance(results, list):
        raise ValueError(f"{pred_path}: a COCO results file is a JSON list of detections, got {type(results).__name__}")
    images, cats = set(gt.getImgIds()), set(gt.getCatIds())
    for i, r in enumerate(results):
        where = f"{pred_path}: detection {i}"
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{where} needs image_id, category_id, bbox [x, y, w, h] and score, got {r!r:.120}")
        if r["image_id"] not in images:
            raise ValueError(f"{where}: image id {r['image_id']!r} is not in {gt_path}")
        if r["category_id"] not in cats:
            raise ValueError(f"{where}: category id {r['category_id']!r} is not in {gt_path} (its ids: {sorted(cats)[:12]}); use the ground truth's category ids")
        box = r["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
        if box[2] < 0 or box[3] < 0:
            raise ValueError(
                f"{where}: bbox {box} has a negative width or height — is it [x1, y1, x2, y2]? COCO results take [x, y, width, height]"
            )
        if not isinstance(r["score"], (int, float)) or isinstance(r["score"], bool) or not math.isfinite(r["score"]):
            raise ValueError(f"{where}: score must be a finite number, got {r['score']!r}")


def score_results_file(gt_path: str | Path, pred_path: str | Path) -> dict[str, Any]:
    """COCO bbox metrics of ``pred_path`` (``[{"image_id", "category_id", "bbox", "score"}]``)."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    for p in (gt_path, pred_path):
        if not p.is_file():
            raise FileNotFoundError(f"file not found: {p}")
    try:
        data = json.loads(gt_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{gt_path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{gt_path}: not a COCO ground-truth file: expected a JSON object with 'images', 'annotations' and 'categories' lists")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = data
            gt.createIndex()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{gt_path}: not a COCO ground-truth file ({exc.__class__.__name__}: {exc})") from None
    try:
        results = json.loads(pred_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{pred_path}: invalid JSON ({exc})") from None
    check_results(results, gt, pred_path, gt_path)
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
