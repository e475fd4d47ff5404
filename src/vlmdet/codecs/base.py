"""The codec contract: original-pixel boxes <-> the exact text a model family writes.

A codec is pure: ``encode(boxes, labels, image_wh) -> str`` and
``decode(text, image_wh) -> Decoded``. ``boxes`` are always ``(n, 4)`` float ``xyxy`` pixels of
the *original* image and ``image_wh`` is that image's ``(width, height)``; each codec converts to
its family's space (resized pixels, 0-1000, 1024 or 1000 bins) and back.

``decode`` never raises. Whatever the text — junk, truncated JSON, code fences, prose around the
answer, swapped corners, values off the image — it returns the boxes it can recover (corners
ordered, clipped to the image, empty ones dropped) and sets ``failed`` when the text did not
follow the format cleanly, so callers can count a parse-failure rate.

Two things every codec shares are done here, once: the answer is looked for after a finished
reasoning block (``<think>…</think>``) and inside ``<answer>…</answer>`` when the model wrote one
(an unfinished ``<think>`` holds no answer); and labels follow one policy
(:mod:`vlmdet.codecs.labels`: whitespace, empty labels, then — given ``classes`` — case and plural
forms mapped to the class).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmdet.codecs.labels import clean_label, match_classes


@dataclass
class Decoded:
    """What a codec recovered from one model answer.

    Attributes:
        boxes: ``(n, 4)`` float64 ``xyxy`` in original-image pixels, clipped to the image.
        labels: ``n`` label strings, stripped.
        failed: the text was not a clean answer in the codec's format (nothing parseable, a
            truncated or malformed structure, or items that had to be skipped).
        skipped: number of items seen but unusable (bad numbers, no label, empty after clipping).
        spans: for each box, the ``(start, end)`` characters of ``raw`` that wrote it (its
            coordinates and label) — where its confidence is read from the token probabilities.

    Unpacks as ``boxes, labels = codec.decode(text, image_wh)``.
    """

    boxes: np.ndarray
    labels: list[str]
    failed: bool = False
    skipped: int = 0
    raw: str = field(default="", repr=False)
    spans: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[Any]:
        yield self.boxes
        yield self.labels

    def __len__(self) -> int:
        return len(self.labels)


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float64)


def as_boxes(boxes: Any) -> np.ndarray:
    """``boxes`` as a float64 ``(n, 4)`` array (accepts lists, tuples, ``(0,)`` empties)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return empty_boxes()
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4) xyxy, got {arr.shape}")
    return arr


def check_image_wh(image_wh: Sequence[float]) -> tuple[int, int]:
    w, h = (int(v) for v in image_wh)
    if w <= 0 or h <= 0:
        raise ValueError(f"image_wh must be positive (width, height), got {tuple(image_wh)}")
    return w, h


def finish(
    raw_boxes: Iterable[Sequence[float]],
    labels: Iterable[str],
    image_wh: tuple[int, int],
    failed: bool,
    skipped: int,
    text: str,
    spans: Iterable[tuple[int, int]] | None = None,
) -> Decoded:
    """Order corners, clip to the image, drop non-finite or empty boxes (counted as skipped).

    ``spans``: the characters of ``text`` each raw box came from (default: the whole text)."""
    w, h = image_wh
    keep_boxes: list[list[float]] = []
    keep_labels: list[str] = []
    keep_spans: list[tuple[int, int]] = []
    raw_boxes = list(raw_boxes)
    spans = list(spans) if spans is not None else [(0, len(text))] * len(raw_boxes)
    for box, label, span in zip(raw_boxes, labels, spans):
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            skipped += 1
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            skipped += 1
            continue
        x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
        y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
        if x2 <= x1 or y2 <= y1:
            skipped += 1
            continue
        label = clean_label(label)
        if not label:  # the label policy: a box that says not what it is was not answered
            skipped += 1
            continue
        keep_boxes.append([x1, y1, x2, y2])
        keep_labels.append(label)
        keep_spans.append((int(span[0]), int(span[1])))
    boxes = np.asarray(keep_boxes, dtype=np.float64) if keep_boxes else empty_boxes()
    return Decoded(boxes, keep_labels, failed=failed or skipped > 0, skipped=skipped, raw=text, spans=keep_spans)


class Codec(ABC):
    """Base class; see the module docstring for the contract."""

    name: str = "codec"

    @abstractmethod
    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        """The exact target text for ``boxes`` (original pixels) and ``labels``, in this family's format."""

    @abstractmethod
    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        """Parse ``text``; may raise — :meth:`decode` turns any exception into a failed result."""

    @abstractmethod
    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        """One quantisation step of this codec, in original pixels along (x, y)."""

    def settings(self) -> dict[str, Any]:
        """Constructor settings, saved beside a trained model so later commands rebuild this codec."""
        return {}

    def decode(self, text: Any, image_wh: Sequence[int], classes: Sequence[str] | None = None) -> Decoded:
        """Recover boxes (original pixels) and labels from a model answer. Never raises.

        ``classes``: the class list the labels are matched to (case, plural: :mod:`vlmdet.codecs.labels`)."""
        try:
            wh = check_image_wh(image_wh)
        except Exception:  # noqa: BLE001 - a decoder never raises, even on a bad size
            return Decoded(empty_boxes(), [], failed=True, raw=str(text))
        if not isinstance(text, str):
            return Decoded(empty_boxes(), [], failed=True, raw=repr(text))
        start, end = answer_region(text)
        try:
            out = self._decode(text[start:end], wh)
        except Exception:  # noqa: BLE001 - junk of any shape must give "no boxes", not a crash
            return Decoded(empty_boxes(), [], failed=True, raw=text)
        if start or end != len(text):
            out.spans = [(a + start, b + start) for a, b in out.spans]
            out.raw = text
        out.labels = match_classes(out.labels, classes)
        return out

    #: substrings a label may not contain because they would make the target text ambiguous
    forbidden_in_labels: tuple[str, ...] = ()

    def check_labels(self, boxes: np.ndarray, labels: Sequence[str]) -> None:
        """Encode-side validation: one non-empty, stripped label per box, nothing that breaks the format."""
        if len(boxes) != len(labels):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
        for label in labels:
            if not isinstance(label, str) or not label.strip() or label != clean_label(label):
                # decoding cleans whitespace the same way (the label policy), so this label could not come back
                raise ValueError(f"label {label!r} must be a non-empty string without surrounding spaces or runs of whitespace inside; "
                                 f"rename it (e.g. {clean_label(label)!r})")
            bad = [s for s in self.forbidden_in_labels if s in label]
            if bad:
                raise ValueError(f"label {label!r} contains {bad[0]!r}, which the {self.name} format cannot carry; rename the class")


_THINK_END = re.compile(r"</think\s*>", re.I)
_ANSWER = re.compile(r"<answer\s*>(.*?)(?:</answer\s*>|$)", re.I | re.S)


def answer_region(text: str) -> tuple[int, int]:
    """Where the answer is in ``text``: after the last ``</think>`` (nowhere while a ``<think>`` is
    unfinished — the answer was cut off in its reasoning), inside ``<answer>…</answer>`` if written."""
    start, end = 0, len(text)
    closes = list(_THINK_END.finditer(text))
    if closes:
        start = closes[-1].end()
    elif re.search(r"<think\s*>", text, re.I):
        return end, end
    m = _ANSWER.search(text, start)
    if m:
        start, end = m.start(1), m.end(1)
    return start, end


def quantize_pair(lo: float, hi: float, q, top: int) -> tuple[int, int]:
    """Quantise a (lo, hi) interval with ``q`` and keep it at least one step wide.

    A box thinner than one step would otherwise encode to zero width and vanish on decode; widening
    it by one step keeps the round-trip error within one quantisation step.
    """
    a, b = q(lo), q(hi)
    if b <= a:
        if a < top:
            b = a + 1
        else:
            a = b - 1
    return a, b
