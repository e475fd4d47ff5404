"""JSON box lists: Qwen2.5-VL (resized pixels), Qwen3-VL and generic chat VLMs (0–1000).

Target text (Qwen style, as the Instruct models answer grounding prompts)::

    ```json
    [
    	{"bbox_2d": [34, 12, 88, 70], "label": "circle"},
    	{"bbox_2d": [5, 40, 31, 66], "label": "star"}
    ]
    ```

The generic ``json`` codec writes the same list on one line without the fence (fewer tokens for a
model with no prior habit). Decoding accepts both, with or without fence (of any language tag),
prose around it, trailing commas, truncation (complete objects before the cut are kept),
``bbox``/``box`` keys, numbers written as strings, corners written as two points
(``[[x1, y1], [x2, y2]]``), the list written as a Python literal (single quotes, as chat models
sometimes answer; read with ``ast.literal_eval``, which evaluates literals only) and the list held
in an object under any key (``{"objects": [...]}``). Items that are not boxes (``point_2d``,
polygons) are skipped and counted, never turned into boxes.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlmdet.codecs.base import Codec, Decoded, as_boxes, check_image_wh, finish, quantize_pair

_BOX_KEYS = ("bbox_2d", "bbox", "box", "bbox2d")
_LABEL_KEYS = ("label", "name", "class", "category")
_FENCE = re.compile(r"```(?:[A-Za-z]+\b)?\s*(.*?)(?:```|$)", re.S)
_DECODER = json.JSONDecoder()


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def _element_spans(body: str, start: int, n: int) -> list[tuple[int, int]] | None:
    """Character spans of the ``n`` elements of the JSON list opening at ``body[start]`` (or None)."""
    spans, pos = [], start + 1
    for _ in range(n):
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        try:
            _, stop = _DECODER.raw_decode(body, pos)
        except ValueError:
            return None
        spans.append((pos, stop))
        pos = stop
    return spans


def _loads(text: str) -> Any:
    """JSON, or the same data written as a Python literal (``{'label': 'cat'}``, ``True``).

    ``ast.literal_eval`` evaluates literals only (no names, calls or attribute access), so a model's
    answer cannot run code. Raises ``ValueError`` when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except Exception as exc:  # noqa: BLE001 - SyntaxError, MemoryError, RecursionError...: not a literal
        raise ValueError(str(exc)) from None


def _brace_spans(body: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of every balanced ``{...}`` in ``body`` (any depth, in order of start),
    quotes of either kind respected."""
    spans, stack, quote, i = [], [], None, 0
    while i < len(body):
        c = body[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "{":
            stack.append(i)
        elif c == "}" and stack:
            spans.append((stack.pop(), i + 1))
        i += 1
    return sorted(spans)


def _spans_of(items: list[Any], body: str, offset: int) -> list[tuple[int, int]]:
    """Where each of ``items`` (dicts, in order) was written in ``body``: the next balanced object
    that reads as the same value; the whole body when none does."""
    found, pos, braces = [], 0, _brace_spans(body)
    for item in items:
        span = None
        for a, b in braces:
            if a < pos:
                continue
            try:
                same = _loads(body[a:b]) == item
            except ValueError:
                same = False
            if same:
                span, pos = (a, b), b
                break
        found.append(span or (0, len(body)))
    return [(offset + a, offset + b) for a, b in found]


def _box_list(data: Any, depth: int = 0) -> list[Any] | None:
    """The list of box objects inside a wrapping object (``{"objects": [...]}``), searched depth-first."""
    if depth > 4:
        return None
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return data
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, (list, dict)):
                found = _box_list(value, depth + 1)
                if found is not None:
                    return found
    return None


def _items_from_text(text: str) -> tuple[list[tuple[Any, tuple[int, int]]], bool]:
    """JSON items in ``text`` with the characters each came from, and whether that needed salvage
    (not one clean JSON list/object)."""
    m = _FENCE.search(text)
    raw_body, offset = (m.group(1), m.start(1)) if m else (text, 0)
    body = raw_body.strip()
    offset += len(raw_body) - len(raw_body.lstrip())
    whole = (offset, offset + len(body))
    if body.startswith("{"):
        try:
            data = _loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if any(k in data for k in _BOX_KEYS) or _box_list(data) is None:
                return [(data, whole)], False
            inner = _box_list(data)
            return list(zip(inner, _spans_of(inner, body, offset))), False
    start, end = body.find("["), body.rfind("]")
    first_brace = body.find("{")
    # A '[' that comes after the first '{' belongs to an object (a bbox), not to the answer list.
    if start != -1 and end > start and not (first_brace != -1 and first_brace < start):
        try:
            data = _loads(body[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, list):
            spans = _element_spans(body, start, len(data))
            if spans is None:  # not JSON (a Python literal): find each object by its value
                dicts = [x if isinstance(x, dict) else None for x in data]
                spans = [s for s in _spans_of(dicts, body, 0)]
            return [(item, (offset + a, offset + b)) for item, (a, b) in zip(data, spans)], False
    # Salvage: every complete {...} object anywhere in the text, in order.
    items: list[tuple[Any, tuple[int, int]]] = []
    pos = first_brace
    while pos != -1:
        try:
            obj, stop = _DECODER.raw_decode(body, pos)
        except ValueError:
            pos = body.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            items.append((obj, (offset + pos, offset + stop)))
        pos = body.find("{", stop)
    if not items:  # objects written as Python literals: the outermost balanced ones that read as such
        taken = 0
        for a, b in _brace_spans(body):
            if a < taken:
                continue
            try:
                obj = _loads(body[a:b])
            except ValueError:
                continue
            if isinstance(obj, dict):
                items.append((obj, (offset + a, offset + b)))
                taken = b
    return items, True


def _box_and_label(item: Any) -> tuple[list[float], str] | None:
    if not isinstance(item, dict):
        return None
    box = next((item[k] for k in _BOX_KEYS if k in item), None)
    label = next((item[k] for k in _LABEL_KEYS if k in item), None)
    if isinstance(box, (list, tuple)) and len(box) == 2 and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in box):
        box = [*box[0], *box[1]]  # corners written as two points
    if not isinstance(box, (list, tuple)) or len(box) != 4 or label is None or isinstance(label, (dict, list)):
        return None
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return values, str(label)


class JsonBoxCodec(Codec):
    """``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`` in one of two coordinate spaces.

    Args:
        space: ``"resized_pixels"`` (Qwen2.5-VL: integer pixels of the image after
            ``smart_resize(h, w, factor, min_pixels, max_pixels)``) or ``"rel1000"`` (Qwen3-VL and
            generic VLMs: ``round(x / width * 1000)``). ``"original_pixels"`` exists only to
            reproduce the classic mistake (targets in the original image's pixels) in ablations
            and ``doctor`` tests.
        fenced: wrap the list in a ```` ```json ```` fence, one object per line (Qwen's own habit).
        factor, min_pixels, max_pixels: the resize rules of the model's processor (resized space
            only); take them from the processor (``family.codec_settings(processor)``).
    """

    def __init__(
        self,
        space: str = "rel1000",
        fenced: bool = True,
        factor: int = 28,
        min_pixels: int = 56 * 56,
        max_pixels: int = 28 * 28 * 1280,
        name: str = "json",
    ) -> None:
        if space not in ("resized_pixels", "rel1000", "original_pixels"):
            raise ValueError(f"unknown JSON box space {space!r}; use resized_pixels, rel1000 or original_pixels")
        self.space, self.fenced = space, fenced
        self.factor, self.min_pixels, self.max_pixels = int(factor), int(min_pixels), int(max_pixels)
        self.name = name

    def settings(self) -> dict[str, Any]:
        if self.space == "resized_pixels":
            return {"factor": self.factor, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        return {}

    def model_wh(self, image_wh: Sequence[int]) -> tuple[int, int]:
        """Size of the space the model writes in: the smart-resized ``(w, h)``, or ``(1000, 1000)``."""
        w, h = check_image_wh(image_wh)
        if self.space == "rel1000":
            return 1000, 1000
        if self.space == "original_pixels":
            return w, h
        if max(w, h) / min(w, h) > 200:
            raise ValueError(
                f"image {w}x{h} has an aspect ratio over 200, which the Qwen-VL processor refuses; crop or pad it"
            )
        rh, rw = smart_resize(h, w, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return rw, rh

    def step(self, image_wh: Sequence[int]) -> tuple[float, float]:
        w, h = check_image_wh(image_wh)
        mw, mh = self.model_wh((w, h))
        return w / mw, h / mh

    def encode(self, boxes: Any, labels: Sequence[str], image_wh: Sequence[int]) -> str:
        arr = as_boxes(boxes)
        self.check_labels(arr, labels)
        w, h = check_image_wh(image_wh)
        mw, mh = self.model_wh((w, h))
        objs = []
        for (x1, y1, x2, y2), label in zip(arr, labels):
            qx1, qx2 = quantize_pair(x1, x2, lambda v: min(max(_round(v * mw / w), 0), mw), mw)
            qy1, qy2 = quantize_pair(y1, y2, lambda v: min(max(_round(v * mh / h), 0), mh), mh)
            objs.append(json.dumps({"bbox_2d": [qx1, qy1, qx2, qy2], "label": label}, ensure_ascii=False))
        if not self.fenced:
            return "[" + ", ".join(objs) + "]"
        if not objs:
            return "```json\n[]\n```"
        return "```json\n[\n" + ",\n".join("\t" + o for o in objs) + "\n]\n```"

    def _decode(self, text: str, image_wh: tuple[int, int]) -> Decoded:
        w, h = image_wh
        items, salvaged = _items_from_text(text)
        mw, mh = self.model_wh(image_wh)
        boxes, labels, spans, skipped = [], [], [], 0
        for item, span in items:
            parsed = _box_and_label(item)
            if parsed is None:
                skipped += 1
                continue
            (x1, y1, x2, y2), label = parsed
            boxes.append([x1 / mw * w, y1 / mh * h, x2 / mw * w, y2 / mh * h])
            labels.append(label)
            spans.append(span)
        nothing = not items and not re.search(r"\[\s*\]", text)
        return finish(boxes, labels, image_wh, failed=salvaged or nothing, skipped=skipped, text=text, spans=spans)
