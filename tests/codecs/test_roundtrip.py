"""decode(encode(b)) == b within one quantisation step, for every codec, as a property."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmdet.codecs import CODECS, get_codec
from vlmdet.codecs.labels import clean_label

LABELS = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz -_0123456789ÄéЖ"), min_size=1, max_size=20).map(clean_label).filter(bool)


def image_sizes(max_ratio: float | None):
    """Typical sizes, 1xN strips and very large images (up to 20000 px a side)."""
    plain = st.tuples(st.integers(1, 20000), st.integers(1, 20000))
    strips = st.integers(1, 5000).flatmap(lambda n: st.sampled_from([(1, n), (n, 1)]))
    sizes = st.one_of(plain, strips, st.tuples(st.integers(8000, 20000), st.integers(8000, 20000)))
    if max_ratio is not None:
        sizes = sizes.filter(lambda wh: max(wh) / min(wh) <= max_ratio)
    return sizes


@st.composite
def boxes_in_image(draw, max_ratio=None):
    w, h = draw(image_sizes(max_ratio))
    n = draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x1, x2 = sorted(draw(st.floats(0, w, allow_nan=False)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, h, allow_nan=False)) for _ in range(2))
        if x2 - x1 < 1e-6 * w or y2 - y1 < 1e-6 * h:
            x2, y2 = min(w, x1 + max(1e-3, w / 50)), min(h, y1 + max(1e-3, h / 50))
            x1, y1 = x2 - max(1e-3, w / 50), y2 - max(1e-3, h / 50)
            x1, y1 = max(0.0, x1), max(0.0, y1)
        boxes.append([x1, y1, x2, y2])
    labels = [draw(LABELS) for _ in range(n)]
    return (w, h), np.array(boxes, dtype=float).reshape(-1, 4), labels


def _check_roundtrip(codec, wh, boxes, labels):
    text = codec.encode(boxes, labels, wh)
    decoded = codec.decode(text, wh)
    assert not decoded.failed, (text, decoded)
    assert decoded.labels == labels
    assert decoded.boxes.shape == boxes.shape
    sx, sy = codec.step(wh)
    step = np.array([sx, sy, sx, sy])
    err = np.abs(decoded.boxes - boxes)
    # One step for any box at least one step wide. A thinner box is widened to one step on encode so
    # it does not vanish, which can cost 1.5 steps on its far edge — and up to 2 at the image's far
    # edge, where a format whose last bin is below the image size (PaliGemma's 1023/1024) must
    # widen it inwards. (A box one step wide up to float error counts as thin.)
    wide = ((boxes[:, 2] - boxes[:, 0]) > sx * (1 + 1e-6)) & ((boxes[:, 3] - boxes[:, 1]) > sy * (1 + 1e-6))
    tol = np.where(wide[:, None], 1.0, 2.0) * step + 1e-6 * np.maximum(step, 1)
    assert (err <= tol).all(), (text, boxes, decoded.boxes, step)
    # and the decoded boxes stay inside the image with positive area
    if len(decoded.boxes):
        assert (decoded.boxes[:, 2] > decoded.boxes[:, 0]).all() and (decoded.boxes[:, 3] > decoded.boxes[:, 1]).all()
        assert (decoded.boxes >= 0).all() and (decoded.boxes[:, [0, 2]] <= wh[0]).all() and (decoded.boxes[:, [1, 3]] <= wh[1]).all()


@pytest.mark.parametrize("family", [c for c in CODECS if c != "qwen2_5_vl"])  # qwen2_5_vl: its resized space, below
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=boxes_in_image())
def test_roundtrip_relative_codecs(family, case):
    wh, boxes, labels = case
    _check_roundtrip(get_codec(family), wh, boxes, labels)


@pytest.mark.parametrize("max_pixels", [28 * 28 * 1280, 128 * 128, 12845056])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=boxes_in_image(max_ratio=200))
def test_roundtrip_qwen2_5_vl_resized_space(max_pixels, case):
    wh, boxes, labels = case
    _check_roundtrip(get_codec("qwen2_5_vl", factor=28, min_pixels=56 * 56, max_pixels=max_pixels), wh, boxes, labels)


def test_qwen2_5_vl_refuses_images_the_processor_refuses():
    codec = get_codec("qwen2_5_vl")
    with pytest.raises(ValueError, match="aspect ratio"):
        codec.encode([[0, 0, 1, 1]], ["a"], (1, 500))
    assert codec.decode('[{"bbox_2d": [0, 0, 1, 1], "label": "a"}]', (1, 500)).failed


def test_every_codec_is_registered_and_documents_its_step():
    for name in CODECS:
        sx, sy = get_codec(name).step((1000, 500))
        assert sx > 0 and sy > 0


@pytest.mark.parametrize(
    "family,label",
    [("paligemma", "a;b"), ("paligemma", "x<y"), ("florence2", "x<loc_1>"), ("qwen2_vl", "a<|box_end|>"), ("json", ""), ("json", " padded "), ("json", "two  spaces"), ("paligemma", "tab\tinside")],
)
def test_labels_that_would_break_the_format_are_refused(family, label):
    with pytest.raises(ValueError, match="label"):
        get_codec(family).encode([[0, 0, 10, 10]], [label], (100, 100))
