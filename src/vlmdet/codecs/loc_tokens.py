"""Location-token codecs: PaliGemma (``<locDDDD>``, 1024 bins, y first) and Florence-2 (``<loc_D>``).

PaliGemma target (prompt ``detect circle ; star``)::

    <loc0102><loc0230><loc0511><loc0640> circle ; <loc0700><loc0012><loc0900><loc0210> star

    bin = round(v / size * 1024), clamped to 1023; decoded as bin / 1024 * size — the convention of
    big_vision's evaluators and of supervision's ``from_paligemma``.

Florence-2 target (task ``<OD>``)::

    circle<loc_230><loc_102><loc_640><loc_511>star<loc_12><loc_700><loc_210><loc_900>

    bin = floor(v / size * 1000), clamped to 999; decoded at the bin centre (bin + 0.5) / 1000 * size
    — exactly ``Florence2PostProcessor.quantize`` / ``dequantize`` in transformers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from vlmdet.codecs.base import Codec, Decoded, as_boxes, check_image_wh, finish, quantize_pair

_PALI_OBJ = re.compile(r"((?:<loc\d{4}>){4})\s*([^;<]*)")
_PALI_LOC = re.compile(r"<loc(\d{4})>")
_FLO_LOC = re.compile(r"<loc_(\d+)>")
_BROKEN_LOC = re.compile(r"<?/?loc_\d*>?|<[^>]*$|^[^<]*>")  # a location token's pieces left by a cut


class PaliGemmaCodec(Codec):
    name = "paligemma"
    bins = 1024
    forbidden_in_labels = (";", "<")

    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        w, h = check_image_wh(image_wh)
        return w / self.bins, h / self.bins

    def _bin(self, v: float, size: int) -> int:
        return min(max(int(math.floor(v / size * self.bins + 0.5)), 0), self.bins - 1)

    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        arr = as_boxes(boxes)
        self.check_labels(arr, labels)
        w, h = check_image_wh(image_wh)
        parts = []
        for (x1, y1, x2, y2), label in zip(arr, labels):
            bx1, bx2 = quantize_pair(x1, x2, lambda v: self._bin(v, w), self.bins - 1)
            by1, by2 = quantize_pair(y1, y2, lambda v: self._bin(v, h), self.bins - 1)
            locs = "".join(f"<loc{b:04d}>" for b in (by1, bx1, by2, bx2))
            parts.append(f"{locs} {label}")
        return " ; ".join(parts)

    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        w, h = image_wh
        boxes, labels, spans, skipped = [], [], [], 0
        for m in _PALI_OBJ.finditer(text):
            y1, x1, y2, x2 = (int(v) for v in _PALI_LOC.findall(m.group(1)))
            label = m.group(2).strip()
            if not label:
                skipped += 1
                continue
            boxes.append([x1 / self.bins * w, y1 / self.bins * h, x2 / self.bins * w, y2 / self.bins * h])
            labels.append(label)
            spans.append((m.start(), m.start(2) + len(m.group(2).rstrip())))
        n_locs = len(_PALI_LOC.findall(text))
        failed = n_locs != 4 * (len(boxes) + skipped) or (not boxes and text.strip() not in ("", "<eos>"))
        return finish(boxes, labels, image_wh, failed=failed, skipped=skipped, text=text, spans=spans)


class Florence2Codec(Codec):
    name = "florence2"
    bins = 1000
    forbidden_in_labels = ("<",)

    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        w, h = check_image_wh(image_wh)
        return w / self.bins, h / self.bins

    def _bin(self, v: float, size: int) -> int:
        return min(max(int(math.floor(v / (size / self.bins))), 0), self.bins - 1)

    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        arr = as_boxes(boxes)
        self.check_labels(arr, labels)
        w, h = check_image_wh(image_wh)
        parts = []
        for (x1, y1, x2, y2), label in zip(arr, labels):
            bx1, bx2 = quantize_pair(x1, x2, lambda v: self._bin(v, w), self.bins - 1)
            by1, by2 = quantize_pair(y1, y2, lambda v: self._bin(v, h), self.bins - 1)
            parts.append(f"{label}<loc_{bx1}><loc_{by1}><loc_{bx2}><loc_{by2}>")
        return "".join(parts)

    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        w, h = image_wh
        text_clean, where = _without(text, ("<s>", "</s>", "<pad>"))
        bw, bh = w / self.bins, h / self.bins
        boxes, labels, spans, skipped, broken = [], [], [], 0, False
        # Walk the answer as text pieces and <loc_N> tokens. A piece with text starts an object;
        # every four locations after it are one of its boxes (like Florence2PostProcessor, one phrase
        # may carry several). An object cut short (fewer than four locations before the next piece)
        # is skipped, and the broken token text it left (``<loc_3``, ``loc_5>``) never reaches the
        # next object's label.
        locs = list(_FLO_LOC.finditer(text_clean))
        label, label_start, pending, n_boxes = "", 0, [], 0
        pieces = [(0, locs[0].start() if locs else len(text_clean))] + [
            (m.end(), locs[i + 1].start() if i + 1 < len(locs) else len(text_clean)) for i, m in enumerate(locs)
        ]
        for i, (a, b) in enumerate(pieces):
            piece = text_clean[a:b]
            cleaned = _BROKEN_LOC.sub(" ", piece)
            broken |= cleaned != piece
            cleaned = cleaned.strip()
            if cleaned or i == 0:
                if len(pending) % 4 or (label and not n_boxes):
                    skipped += 1  # the previous object was cut short
                label, pending, n_boxes = cleaned, [], 0
                label_start = a + max(piece.find(cleaned), 0) if cleaned else a
            if i < len(locs):
                pending.append(locs[i])
                if len(pending) % 4 == 0:
                    x1, y1, x2, y2 = (int(m.group(1)) for m in pending[-4:])
                    boxes.append([(x1 + 0.5) * bw, (y1 + 0.5) * bh, (x2 + 0.5) * bw, (y2 + 0.5) * bh])
                    labels.append(label)  # an empty one is dropped and counted by the label policy
                    n_boxes += 1
                    start = min(label_start, pending[-4].start()) if label else pending[-4].start()
                    spans.append((where[start], where[pending[-1].end() - 1] + 1))
        if len(pending) % 4 or (label and not n_boxes):
            skipped += 1  # the last object was cut short (the answer ran out of tokens)
        failed = broken or (not boxes and text_clean.strip() != "")
        return finish(boxes, labels, image_wh, failed=failed, skipped=skipped, text=text, spans=spans)


def _without(text: str, tokens: tuple[str, ...]) -> tuple[str, list[int]]:
    """``text`` with every ``tokens`` occurrence removed, and for each kept character its index in ``text``."""
    kept, where, i = [], [], 0
    while i < len(text):
        tok = next((t for t in tokens if text.startswith(t, i)), None)
        if tok is not None:
            i += len(tok)
            continue
        kept.append(text[i])
        where.append(i)
        i += 1
    return "".join(kept), where
