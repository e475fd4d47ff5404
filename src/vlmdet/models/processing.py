"""What a model's image processor does to an image's size — read off the processor, never assumed.

Used by the run preparation (can this model take this image at all?), the image cache (keep no
more pixels than the model will see) and ``doctor`` (draw the target as the model sees it).
"""

from __future__ import annotations

from typing import Any

from PIL import Image


def _size(ip: Any) -> dict[str, Any]:
    size = getattr(ip, "size", None) or {}
    return dict(size) if not isinstance(size, dict) else size


def model_input_wh(processor: Any, image_wh: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of an ``image_wh`` image after the processor's resize.

    Qwen-VL processors: ``smart_resize`` (a multiple of patch * merge, within min/max pixels); fixed-size
    processors (SigLIP, CLIP, a one-tile InternVL): their height x width; longest-edge processors
    (Idefics3/SmolVLM): the aspect-preserving size whose longest side is that edge; tiling processors
    (InternVL with several tiles): the image's own size. Raises ``ValueError`` — with the
    processor's own reason — for an image the processor refuses (e.g. Qwen: aspect ratio over 200).
    """
    ip = processor.image_processor
    w, h = (int(v) for v in image_wh)
    size = _size(ip)
    if hasattr(ip, "merge_size") and hasattr(ip, "patch_size"):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        min_pixels = size.get("shortest_edge") or getattr(ip, "min_pixels", None) or 56 * 56
        max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None) or 28 * 28 * 1280
        rh, rw = smart_resize(h, w, factor=ip.patch_size * ip.merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
        return rw, rh
    if int(getattr(ip, "max_patches", 1) or 1) > 1:
        # tiling processors (InternVL's GOT-OCR2 crops into up to max_patches tiles + a thumbnail):
        # the tile grid follows the image's own size and aspect, so the image is kept as it is
        return w, h
    if size.get("height") and size.get("width"):
        return int(size["width"]), int(size["height"])
    if size.get("longest_edge"):
        s = size["longest_edge"] / max(w, h)
        return max(1, round(w * s)), max(1, round(h * s))
    return w, h


def image_feature_token_id(processor: Any) -> int | None:
    """The id of the token the processor repeats once per image feature (what the model fills with
    the vision tower's output): the processor's image token — except where that is only a
    placeholder the processor expands (Gemma 3: ``<start_of_image>`` becomes ``<image_soft_token>`` × N)."""
    tok = getattr(processor, "tokenizer", None)
    if getattr(processor, "boi_token", None) is not None and getattr(tok, "image_token_id", None) is not None:
        return int(tok.image_token_id)
    return getattr(processor, "image_token_id", None)


def image_problem(processor: Any, image_wh: tuple[int, int]) -> str | None:
    """Why the model's processor cannot take an ``image_wh`` image, or ``None`` when it can."""
    try:
        model_input_wh(processor, image_wh)
    except ValueError as exc:
        return f"the {type(processor.image_processor).__name__} refuses a {image_wh[0]}x{image_wh[1]} image ({exc})"
    return None


def shrink_for_model(image: Image.Image, processor: Any) -> Image.Image:
    """``image`` reduced to what the processor will feed the model — exactly its input size, so the
    processor's own resize becomes the identity and the model sees the same grid — or ``image``
    itself when that would not be smaller (never upscales).

    Exactly the input size matters for Qwen-VL: ``smart_resize`` of the smaller copy must give the
    same patch grid as ``smart_resize`` of the original, or the model would answer in a different
    coordinate space than the codec assumes; ``smart_resize`` of its own output is its output.
    """
    w, h = image.size
    try:
        mw, mh = model_input_wh(processor, (w, h))
    except ValueError:
        return image
    if mw * mh >= w * h or mw > w or mh > h:
        return image
    return image.resize((mw, mh), Image.BICUBIC)
