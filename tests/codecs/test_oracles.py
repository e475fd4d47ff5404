"""vlmdet's decoders agree with supervision's parsers (and transformers' Florence-2 post-processor)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

sv = pytest.importorskip("supervision")
from qwen_vl_utils import smart_resize as qwen_vl_utils_smart_resize  # noqa: E402
from transformers.models.florence2.processing_florence2 import Florence2PostProcessor  # noqa: E402

from vlmdet.codecs import get_codec  # noqa: E402

LABEL = st.sampled_from(["cat", "dog", "traffic light", "hair-drier", "a b c"])


@st.composite
def case(draw):
    w, h = draw(st.integers(15, 4000)), draw(st.integers(15, 4000))
    n = draw(st.integers(1, 5))
    boxes = []
    for _ in range(n):
        x1, x2 = sorted(draw(st.floats(0, w)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, h)) for _ in range(2))
        boxes.append([x1, y1, max(x2, x1 + w / 20) if x1 + w / 20 <= w else x2, max(y2, y1 + h / 20) if y1 + h / 20 <= h else y2])
    boxes = np.array(boxes)
    boxes[:, 0], boxes[:, 1] = np.minimum(boxes[:, 0], boxes[:, 2] - w / 40), np.minimum(boxes[:, 1], boxes[:, 3] - h / 40)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return (w, h), boxes, [draw(LABEL) for _ in range(n)]


def _same(ours, xyxy, names):
    assert ours.labels == [str(n) for n in names]
    np.testing.assert_allclose(ours.boxes, np.asarray(xyxy, dtype=float).reshape(-1, 4), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(c=case())
def test_qwen2_5_vl_matches_supervision(c):
    wh, boxes, labels = c
    assume(max(wh) / min(wh) <= 200)  # the Qwen processor refuses more elongated images
    codec = get_codec("qwen2_5_vl", max_pixels=512 * 512)
    text = codec.encode(boxes, labels, wh)
    det = sv.Detections.from_vlm(sv.VLM.QWEN_2_5_VL, text, input_wh=codec.model_wh(wh), resolution_wh=wh)
    _same(codec.decode(text, wh), det.xyxy, det.data["class_name"])


@settings(max_examples=200, deadline=None)
@given(c=case())
def test_qwen3_vl_matches_supervision(c):
    wh, boxes, labels = c
    codec = get_codec("qwen3_vl")
    text = codec.encode(boxes, labels, wh)
    det = sv.Detections.from_vlm(sv.VLM.QWEN_3_VL, text, resolution_wh=wh)
    _same(codec.decode(text, wh), det.xyxy, det.data["class_name"])


@settings(max_examples=200, deadline=None)
@given(c=case())
def test_paligemma_matches_supervision(c):
    wh, boxes, labels = c
    codec = get_codec("paligemma")
    text = codec.encode(boxes, labels, wh)
    det = sv.Detections.from_vlm(sv.VLM.PALIGEMMA, text, resolution_wh=wh)
    _same(codec.decode(text, wh), det.xyxy, det.data["class_name"])


class _NoSpecialTokens:
    all_special_tokens: list[str] = []


@settings(max_examples=200, deadline=None)
@given(c=case())
def test_florence2_matches_transformers_postprocessor_and_supervision(c):
    wh, boxes, labels = c
    codec = get_codec("florence2")
    text = codec.encode(boxes, labels, wh)
    post = Florence2PostProcessor(config={"description_with_bboxes": {}}, tokenizer=_NoSpecialTokens())
    parsed = post(text=text, image_size=wh, parse_tasks=["description_with_bboxes"])["description_with_bboxes"]
    result = {"<OD>": {"bboxes": [p["bbox"] for p in parsed], "labels": [p["cat_name"] for p in parsed]}}
    det = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, result, resolution_wh=wh)
    # transformers' dequantize truncates the bin centre to an int pixel; vlmdet keeps the float bin
    # centre (the Florence-2 convention), so ours - theirs lies in [0, 1) on every coordinate.
    ours = codec.decode(text, wh)
    assert ours.labels == list(det.data["class_name"])
    diff = ours.boxes - det.xyxy.astype(float)
    assert (diff > -1e-4).all() and (diff < 1 + 1e-4).all(), (ours.boxes, det.xyxy)


@settings(max_examples=500, deadline=None)
@given(h=st.integers(15, 20000), w=st.integers(15, 20000), max_pixels=st.sampled_from([128 * 128, 28 * 28 * 1280, 12845056]))
def test_resize_equals_qwen_vl_utils(h, w, max_pixels):
    assume(max(h, w) / min(h, w) <= 200)
    codec = get_codec("qwen2_5_vl", factor=28, min_pixels=56 * 56, max_pixels=max_pixels)
    rh, rw = qwen_vl_utils_smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=max_pixels)
    # qwen_vl_utils can return a zero side for thin images under a small max_pixels (it lacks the
    # processor's max(factor, ...) guard); such a size cannot be processed at all, so skip it.
    assume(rh >= 28 and rw >= 28)
    assert codec.model_wh((w, h)) == (rw, rh)


def test_resize_follows_the_processor_where_qwen_vl_utils_differs():
    # Below 15 px on a side, or when qwen_vl_utils floors a side to 0, the two smart_resize versions
    # disagree; the processor (what the model actually sees) uses transformers' version, and so does vlmdet.
    codec = get_codec("qwen2_5_vl")
    assert codec.model_wh((1000, 10)) == (560, 28)
    assert qwen_vl_utils_smart_resize(10, 1000, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280) == (28, 1008)
    small = get_codec("qwen2_5_vl", max_pixels=128 * 128)
    assert small.model_wh((575, 15)) == (784, 28)
    assert qwen_vl_utils_smart_resize(15, 575, factor=28, min_pixels=56 * 56, max_pixels=128 * 128) == (0, 784)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_resize_equals_what_the_processor_does(family, tiny_model_dir):
    from PIL import Image
    from transformers import AutoProcessor

    from vlmdet.families import get_family

    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    fam = get_family(family)
    codec = get_codec(family, **fam.codec_settings(processor))
    patch = processor.image_processor.patch_size
    rng = np.random.default_rng(0)
    for _ in range(20):
        w, h = (int(v) for v in rng.integers(15, 700, size=2))
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0]
        if family == "qwen2_5_vl":
            assert codec.model_wh((w, h)) == (int(grid[2]) * patch, int(grid[1]) * patch)
        else:
            assert codec.model_wh((w, h)) == (1000, 1000)
