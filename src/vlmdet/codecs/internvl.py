"""InternVL's grounding format: ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>``, relative 0–1000.

Target text, one reference + box per object, objects on separate lines (reading order)::

    <ref>circle</ref><box>[[120, 45, 380, 410]]</box>
    <ref>star</ref><box>[[500, 500, 610, 700]]</box>

InternVL normalises each value to ``round(v / size * 1000)`` of the original image (its grounding
docs and RefCOCO evaluation divide the answer by 1000 and multiply by the image size), so values
run 0..1000. Decoding also reads several boxes in one ``<box>`` (InternVL writes all instances of
a reference that way: ``<box>[[..], [..]]</box>``), spaces anywhere, and floats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from vlmdet.codecs.base import Codec, Decoded, as_boxes, check_image_wh, finish, quantize_pair

REF_START, REF_END, BOX_START, BOX_END = "<ref>", "</ref>", "<box>", "</box>"
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_ONE = re.compile(rf"\[{_NUM},{_NUM},{_NUM},{_NUM}\]")
_BOX = re.compile(re.escape(BOX_START) + r"(.*?)" + re.escape(BOX_END), re.S)
_REF = re.compile(re.escape(REF_START) + r"(.*?)" + re.escape(REF_END), re.S)


class InternVLCodec(Codec):
    name = "internvl"
    forbidden_in_labels = ("<", "\n")

    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        w, h = check_image_wh(image_wh)
        return w / 1000, h / 1000

    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        arr = as_boxes(boxes)
        self.check_labels(arr, labels)
        w, h = check_image_wh(image_wh)
        qx = lambda v: min(max(int(math.floor(v / w * 1000 + 0.5)), 0), 1000)  # noqa: E731
        qy = lambda v: min(max(int(math.floor(v / h * 1000 + 0.5)), 0), 1000)  # noqa: E731
        lines = []
        for (x1, y1, x2, y2), label in zip(arr, labels):
            (a, c), (b, d) = quantize_pair(x1, x2, qx, 1000), quantize_pair(y1, y2, qy, 1000)
            lines.append(f"{REF_START}{label}{REF_END}{BOX_START}[[{a}, {b}, {c}, {d}]]{BOX_END}")
        return "\n".join(lines)

    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        w, h = image_wh
        refs = [(m.start(), m.end(), m.group(1)) for m in _REF.finditer(text)]
        boxes, labels, spans, skipped = [], [], [], 0
        for m in _BOX.finditer(text):
            before = [(start, label) for start, end, label in refs if end <= m.start()]
            found = list(_ONE.finditer(m.group(1)))
            if not before or not found:
                skipped += max(1, len(found))
                continue
            start, label = before[-1]
            for one in found:
                x1, y1, x2, y2 = (float(v) for v in one.groups())
                boxes.append([x1 / 1000 * w, y1 / 1000 * h, x2 / 1000 * w, y2 / 1000 * h])
                labels.append(label)
                spans.append((start, m.start(1) + one.end()))
        opened = text.count(BOX_START)
        closed = len(_BOX.findall(text))
        failed = opened != closed or skipped > 0 or (not boxes and text.strip() != "")
        return finish(boxes, labels, image_wh, failed=failed, skipped=skipped, text=text, spans=spans)
