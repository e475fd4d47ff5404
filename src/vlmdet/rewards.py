"""Detection rewards for reinforcement learning (GRPO), as plain functions.

Each part scores one model answer against one image's ground truth; boxes are xyxy pixels of the
original image (what a codec's ``decode`` returns), labels strings. Matching is
:func:`vlmdet.metrics.matching.match` — the same optimal one-to-one assignment the metrics use.

=================  =====================================================================  ==========
part               formula                                                                range
=================  =====================================================================  ==========
``f1``             F1 of same-label matches at IoU >= 0.5 (2·TP / (n_pred + n_gt));       [0, 1]
                   both empty: 1
``soft_iou``       sum of the matched IoUs (same label, any overlap, the assignment       [0, 1]
                   that maximises it) / max(n_pred, n_gt): unmatched boxes count zero,
                   so a box that only roughly covers its object still earns something;
                   both empty: 1
``format``         1 when the text decodes cleanly in the family's format                 {0, 1}
                   (the codec's ``failed`` flag is off), else 0
``duplicates``     −(boxes repeating an earlier box of the same label, IoU > 0.9) /       [−1, 0]
                   n_pred
``count``          −min(1, |n_pred − n_gt| / max(1, n_gt)): listing many boxes to catch   [−1, 0]
                   a few, or none at all, costs
=================  =====================================================================  ==========

The total is the weighted sum (weights in ``RLConfig.rewards``; TRL's ``reward_weights``), and TRL
logs every part separately (``rewards/<part>/mean``). Why these against the usual failures:
boxing the whole image gets a low ``f1`` and ``soft_iou`` when objects are small; listing many
boxes loses ``f1`` precision and ``count``; repeating a box loses ``duplicates`` (matching is one to
one, so a repeat never earns twice); junk text earns nothing but a ``format`` of 0.

:func:`reward_functions` wraps the parts in TRL's reward-function signature. A reward reads the
completion from its *token ids* (as generated, special tokens kept, cut at the first end token) —
not from TRL's ``skip_special_tokens`` text, which drops Qwen2-VL's box tokens — and scores it
against the sample named by the row's ``sample_index`` column, the one TRL passes alongside that
completion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlmdet.metrics.matching import duplicates, match

PARTS = ("f1", "soft_iou", "format", "duplicates", "count")
DEFAULT_WEIGHTS = {"f1": 1.0, "soft_iou": 1.0, "format": 0.5, "duplicates": 0.5, "count": 0.5}


def _as(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def f1_reward(pred_boxes: Any, pred_labels: Sequence[str], gt_boxes: Any, gt_labels: Sequence[str], iou_threshold: float = 0.5) -> float:
    """F1 of same-label matches at ``iou_threshold`` (see the module table)."""
    pred, gt = _as(pred_boxes), _as(gt_boxes)
    if not len(pred) and not len(gt):
        return 1.0
    tp = len(match(pred, pred_labels, gt, gt_labels, iou_threshold))
    return 2.0 * tp / (len(pred) + len(gt))


def soft_iou_reward(pred_boxes: Any, pred_labels: Sequence[str], gt_boxes: Any, gt_labels: Sequence[str]) -> float:
    """Summed IoU of the best same-label assignment / max(n_pred, n_gt) (see the module table)."""
    pred, gt = _as(pred_boxes), _as(gt_boxes)
    if not len(pred) and not len(gt):
        return 1.0
    pairs = match(pred, pred_labels, gt, gt_labels, iou_threshold=1e-9)
    return sum(p.iou for p in pairs) / max(len(pred), len(gt))


def format_reward(failed: bool) -> float:
    """1.0 for an answer that decodes cleanly in the family's format, else 0.0."""
    return 0.0 if failed else 1.0


def duplicate_penalty(pred_boxes: Any, pred_labels: Sequence[str], iou_threshold: float = 0.9) -> float:
    """−(share of boxes that repeat an earlier box of the same label)."""
    pred = _as(pred_boxes)
    return -len(duplicates(pred, pred_labels, iou_threshold)) / len(pred) if len(pred) else 0.0


def count_penalty(n_pred: int, n_gt: int) -> float:
    """−min(1, |n_pred − n_gt| / max(1, n_gt))."""
    return -min(1.0, abs(n_pred - n_gt) / max(1, n_gt))


def score_parts(decoded: Any, gt_boxes: Any, gt_labels: Sequence[str]) -> dict[str, float]:
    """Every part for one decoded answer (``Decoded``: boxes, labels, failed)."""
    gt_boxes = _as(gt_boxes)
    return {
        "f1": f1_reward(decoded.boxes, decoded.labels, gt_boxes, gt_labels),
        "soft_iou": soft_iou_reward(decoded.boxes, decoded.labels, gt_boxes, gt_labels),
        "format": format_reward(decoded.failed),
        "duplicates": duplicate_penalty(decoded.boxes, decoded.labels),
        "count": count_penalty(len(decoded.boxes), len(gt_boxes)),
    }


def total(parts: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weights.get(k, 0.0) * v for k, v in parts.items())


class _Part:
    """One reward part in TRL's signature: ``(prompts, completions, completion_ids, sample_index, **kw) -> list[float]``."""

    def __init__(self, name: str, scorer: Callable[[int, list[int]], dict[str, float]]) -> None:
        self.__name__ = name  # TRL logs rewards/<__name__>/mean
        self._scorer = scorer

    def __call__(self, prompts=None, completions=None, completion_ids=None, sample_index=None, **kwargs) -> list[float]:
        if sample_index is None or completion_ids is None:
            raise ValueError("vlmdet's rewards need the dataset's sample_index column and TRL's completion_ids")
        return [self._scorer(int(i), list(ids))[self.__name__] for i, ids in zip(sample_index, completion_ids)]


def reward_functions(samples: Sequence[Any], settings: Any, tokenizer: Any, end_ids: set[int], weights: dict[str, float] | None = None):
    """``(reward_funcs, reward_weights)`` for ``trl.GRPOTrainer``: one function per part with a weight.

    ``samples`` are the training samples (``sample_index`` indexes them), ``settings`` the run's
    :class:`~vlmdet.rows.TaskSettings` (its codec decodes the answers), ``end_ids`` the tokens that
    end an answer."""
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(weights) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown reward part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    cache: dict[tuple[int, tuple[int, ...]], dict[str, float]] = {}

    def scorer(index: int, ids: list[int]) -> dict[str, float]:
        key = (index, tuple(ids))
        if key not in cache:
            cut = next((k for k, t in enumerate(ids) if t in end_ids), len(ids))
            text = tokenizer.decode(ids[:cut], skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()
            sample = samples[index]
            decoded = settings.decode(text, sample)
            boxes, labels = sample.targets
            if sample.phrase:  # grounding: one phrase, so every box is the same "object" whatever label it carries
                decoded = dataclasses.replace(decoded, labels=["object"] * len(decoded.labels))
                labels = ["object"] * len(labels)
            cache[key] = score_parts(decoded, boxes, labels)
            if len(cache) > 4096:
                cache.pop(next(iter(cache)))
        return cache[key]

    names = [p for p in PARTS if weights.get(p, 0.0) != 0.0]
    return [_Part(name, scorer) for name in names], [float(weights[name]) for name in names]
