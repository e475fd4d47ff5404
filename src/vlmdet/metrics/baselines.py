"""Image-blind baselines: what a "model" that never looks at the image scores.

A fine-tuned model that beats a base scoring 0 has proved little; one that beats these has learned to
look. Both are fitted on the *training* split and scored on the evaluation split by the same
:class:`~vlmdet.metrics.DetectionMetrics` as the models:

* ``mean box`` — the class prior and the average layout: the most frequent set of classes per
  training image (e.g. one ``dog``; images without boxes do not count, a baseline that answers
  nothing scores 0), and for it the mean normalised box of each object, objects taken in reading
  order (top to bottom, then left to right, as targets are written) over the training images with
  exactly that set. With no such image, each class's mean box over all its training boxes.
  Normalised boxes scale with each evaluated image.
* ``whole image`` — every class of the dataset, one box each, the whole image.

:func:`verdict` says, in one line, whether a model beats the better of them on mAP50.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmdet.data.sample import Sample
from vlmdet.metrics.coco import DetectionMetrics, DetectionResult

MEAN_BOX, WHOLE_IMAGE = "baseline: mean box", "baseline: whole image"


@dataclass
class ConstantBoxes:
    """The same boxes on every image: ``boxes`` ``(n, 4)`` xyxy normalised to 0..1, and their labels."""

    name: str
    boxes: np.ndarray
    labels: list[str]
    how: str = ""

    def predict(self, image_wh: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
        w, h = image_wh
        return np.asarray(self.boxes, dtype=float).reshape(-1, 4) * [w, h, w, h], list(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "how": self.how, "boxes": np.round(self.boxes, 4).tolist(), "labels": self.labels}


def _normalised_targets(s: Sample) -> tuple[np.ndarray, list[str]]:
    from vlmdet.rows import canonical_order

    boxes, labels = canonical_order(*s.targets)
    w, h = s.image_wh
    return np.asarray(boxes, dtype=float).reshape(-1, 4) / [w, h, w, h], list(labels)


def mean_box_baseline(train: Sequence[Sample], classes: Sequence[str] | None) -> ConstantBoxes:
    """The ``mean box`` baseline fitted on ``train`` (see the module docstring). ``classes=None``
    (grounding): every box is one kind of object, whatever its phrase."""
    known = set(classes) if classes is not None else None
    sets: Counter[tuple[str, ...]] = Counter()
    layouts: dict[tuple[str, ...], list[np.ndarray]] = {}
    per_class: dict[str, list[np.ndarray]] = {}
    for s in train:
        boxes, labels = _normalised_targets(s)
        if known is None:
            labels = ["object"] * len(labels)
        keep = [i for i, lab in enumerate(labels) if known is None or lab in known]
        boxes, labels = boxes[keep], [labels[i] for i in keep]
        if not labels:
            continue
        key = tuple(sorted(labels))
        sets[key] += 1
        # objects in reading order, grouped by class, so that position k of one image meets position k of another
        order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
        layouts.setdefault(key, []).append(boxes[order])
        for b, lab in zip(boxes, labels):
            per_class.setdefault(lab, []).append(b)
    if not sets:
        return ConstantBoxes(MEAN_BOX, np.zeros((0, 4)), [], "no training box: answers nothing")
    key, n = max(sets.items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))
    mean = np.mean(np.stack(layouts[key]), axis=0)
    how = f"the most frequent class set per training image ({', '.join(key)}: {n} of {sum(sets.values())} images with boxes), its mean layout"
    return ConstantBoxes(MEAN_BOX, mean, list(key), how)


def whole_image_baseline(classes: Sequence[str]) -> ConstantBoxes:
    return ConstantBoxes(WHOLE_IMAGE, np.tile([0.0, 0.0, 1.0, 1.0], (len(classes), 1)), list(classes), "every class, the whole image")


def score_constant(baseline: ConstantBoxes, samples: Sequence[Sample], classes: Sequence[str] | None) -> DetectionResult:
    """``baseline`` scored on ``samples`` exactly as a model's answers are (no confidences)."""
    metrics = DetectionMetrics(list(classes) if classes is not None else None)
    for s in samples:
        boxes, labels = baseline.predict(s.image_wh)
        metrics.update(s.image_wh, s.boxes, s.labels, boxes, labels, iscrowd=s.ignored)
    return metrics.compute()


@dataclass
class Baselines:
    """Both baselines, fitted on ``fitted_on`` and scored on the evaluation images."""

    results: dict[str, DetectionResult]
    baselines: list[ConstantBoxes]
    fitted_on: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, dict[str, Any]]:
        return {name: r.to_dict() for name, r in self.results.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"fitted_on": self.fitted_on, "note": self.note, "models": [b.to_dict() for b in self.baselines],
                "results": self.columns()}

    def describe(self) -> str:
        """One sentence under every table with baseline columns: what they are and where they were fitted."""
        mean = self.baselines[0]
        return (f"Baselines ignore the image: 'mean box' answers {mean.how}; 'whole image' answers every class with the whole "
                f"image. Fitted on {self.fitted_on}" + (f" ({self.note})" if self.note else "") + "; scored like the models.")

    @property
    def best_map50(self) -> float:
        return max((r.map50 for r in self.results.values()), default=-1.0)


def fit_and_score(train: Sequence[Sample], eval_samples: Sequence[Sample], classes: Sequence[str] | None, fitted_on: str, note: str = "") -> Baselines:
    """Fit both baselines on ``train`` and score them on ``eval_samples`` (closed set ``classes``;
    ``None`` or empty for grounding, scored class-agnostic as grounding models are)."""
    classes = list(classes) if classes else None
    models = [mean_box_baseline(train, classes), whole_image_baseline(classes or ["object"])]
    return Baselines({b.name: score_constant(b, eval_samples, classes) for b in models}, models, fitted_on, note)


def verdict(model_map50: float | None, baselines: Baselines | dict[str, Any] | None, name: str = "the model") -> str | None:
    """One line when ``name`` does not beat the better image-blind baseline on mAP50 (else a line
    saying it does); ``None`` when either figure is undefined."""
    if baselines is None or model_map50 is None or model_map50 < 0:
        return None
    results = baselines.columns() if isinstance(baselines, Baselines) else baselines.get("results", {})
    scored = {k: v["map50"] for k, v in results.items() if v.get("map50", -1) >= 0}
    if not scored:
        return None
    best = max(scored, key=scored.get)
    if model_map50 <= scored[best]:
        return (f"{name} does not beat a box that ignores the image: mAP50 {model_map50:.3f} vs {scored[best]:.3f} for the "
                f"{best.split(': ', 1)[-1]} baseline")
    return f"{name} beats the image-blind baselines: mAP50 {model_map50:.3f} vs {scored[best]:.3f} ({best.split(': ', 1)[-1]})"
