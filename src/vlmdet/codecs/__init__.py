"""Codecs: one per model family, converting original-pixel boxes to and from the model's text.

``get_codec(family, **settings)`` returns a :class:`~vlmdet.codecs.base.Codec`:

============ ==================================================== ==============================
family       target text                                          space
============ ==================================================== ==============================
qwen2_5_vl   fenced JSON list of ``{"bbox_2d": [...], "label"}``  pixels after smart_resize
qwen3_vl     same                                                 relative 0–1000
json         same list, one line, no fence (generic chat VLMs)    relative 0–1000
qwen2_vl     ``<|object_ref_start|>l<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``  [0, 1000)
paligemma    ``<locY1><locX1><locY2><locX2> label ; ...``         1024 bins, y first
florence2    ``label<loc_X1><loc_Y1><loc_X2><loc_Y2>...``         1000 bins, floor, bin centre
internvl     ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>``      relative 0–1000
============ ==================================================== ==============================
"""

from __future__ import annotations

from typing import Any

from vlmdet.codecs.base import Codec, Decoded
from vlmdet.codecs.internvl import InternVLCodec
from vlmdet.codecs.json_boxes import JsonBoxCodec
from vlmdet.codecs.loc_tokens import Florence2Codec, PaliGemmaCodec
from vlmdet.codecs.qwen2_vl import Qwen2VLCodec

__all__ = ["Codec", "Decoded", "CODECS", "get_codec"]


def _qwen2_5_vl(**settings: Any) -> Codec:
    return JsonBoxCodec(space="resized_pixels", fenced=True, name="qwen2_5_vl", **settings)


def _qwen3_vl(**settings: Any) -> Codec:
    return JsonBoxCodec(space="rel1000", fenced=True, name="qwen3_vl", **settings)


def _json(**settings: Any) -> Codec:
    settings.setdefault("fenced", False)
    return JsonBoxCodec(space="rel1000", name="json", **settings)


CODECS = {
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "json": _json,
    "qwen2_vl": lambda **s: Qwen2VLCodec(**s),
    "paligemma": lambda **s: PaliGemmaCodec(**s),
    "florence2": lambda **s: Florence2Codec(**s),
    "internvl": lambda **s: InternVLCodec(**s),
}


def get_codec(family: str, **settings: Any) -> Codec:
    """The codec of ``family`` (a family or codec name), built with ``settings``.

    A family name from :mod:`vlmdet.families` maps to its codec (e.g. ``smolvlm`` -> ``json``).
    Qwen2.5-VL takes ``factor``, ``min_pixels``, ``max_pixels`` — read them off the model's
    processor with ``get_family("qwen2_5_vl").codec_settings(processor)``.
    """
    name = family
    if name not in CODECS:
        from vlmdet.families import get_family

        try:
            name = get_family(family).codec
        except ValueError:
            raise ValueError(f"no codec for {family!r}; known: {', '.join(CODECS)}") from None
    return CODECS[name](**settings)
