"""Qwen2-VL box tokens, relative coordinates in [0, 1000).

Target text, one reference + box per object::

    <|object_ref_start|>circle<|object_ref_end|><|box_start|>(120,45),(380,410)<|box_end|>

Qwen2-VL normalises to [0, 1000) (paper, sec. 2.2), so values are clamped to 999. Decoding also
accepts several boxes after one reference (they share its label) and spaces inside the tuples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from vlmdet.codecs.base import Codec, Decoded, as_boxes, check_image_wh, finish, quantize_pair

REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(re.escape(BOX_START) + rf"\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)" + re.escape(BOX_END))
_REF = re.compile(re.escape(REF_START) + r"(.*?)" + re.escape(REF_END), re.S)


class Qwen2VLCodec(Codec):
    name = "qwen2_vl"
    forbidden_in_labels = ("<|",)

    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        w, h = check_image_wh(image_wh)
        return w / 1000, h / 1000

    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        arr = as_boxes(boxes)
        self.check_labels(arr, labels)
        w, h = check_image_wh(image_wh)
        qx = lambda v: min(max(int(math.floor(v / w * 1000 + 0.5)), 0), 999)  # noqa: E731
        qy = lambda v: min(max(int(math.floor(v / h * 1000 + 0.5)), 0), 999)  # noqa: E731
        parts = []
        for (x1, y1, x2, y2), label in zip(arr, labels):
            (a, c), (b, d) = quantize_pair(x1, x2, qx, 999), quantize_pair(y1, y2, qy, 999)
            parts.append(f"{REF_START}{label}{REF_END}{BOX_START}({a},{b}),({c},{d}){BOX_END}")
        return "".join(parts)

    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        w, h = image_wh
        refs = [(m.start(), m.end(), m.group(1)) for m in _REF.finditer(text)]
        boxes, labels, spans, skipped = [], [], [], 0
        for m in _BOX.finditer(text):
            # the label is the nearest reference before this box
            before = [(start, label) for start, end, label in refs if end <= m.start()]
            if not before:
                skipped += 1
                continue
            x1, y1, x2, y2 = (float(v) for v in m.groups())
            boxes.append([x1 / 1000 * w, y1 / 1000 * h, x2 / 1000 * w, y2 / 1000 * h])
            labels.append(before[-1][1])
            spans.append((before[-1][0], m.end()))
        opened = text.count(BOX_START)
        failed = opened != len(boxes) + skipped or (not boxes and text.strip() != "")
        return finish(boxes, labels, image_wh, failed=failed, skipped=skipped, text=text, spans=spans)
