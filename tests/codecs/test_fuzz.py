"""Decoders never raise: 10 000 random / junk strings per family, plus the classic broken answers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vlmdet.codecs import CODECS, get_codec

PIECES = [
    "```json", "```", "[", "]", "{", "}", '"bbox_2d"', '"label"', ":", ",", " ", "\n", "\t", '"cat"', "null", "NaN",
    "Infinity", "-1e309", "1e309", "12", "-5", "3.5", "999999999999", "0", "<loc0123>", "<loc1023>", "<loc9999>", "<loc_5>",
    "<loc_999>", "<loc_", ";", " ; ", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "(", ")", "(1,2),(3,4)", "<s>", "</s>", "<pad>", "\\", '"', "'", "bbox", "label", "true", "ÿ", "\x00", "🙂",
]


def _junk(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
    if kind < 0.7:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 80)))
    # a valid answer, then damaged: cut, spliced, or with a character flipped
    codec_text = get_codec(rng.choice(list(CODECS))).encode([[1, 2, 30, 40], [5, 5, 9, 9]], ["cat", "dog"], (64, 48))
    cut = rng.randint(0, len(codec_text))
    if kind < 0.8:
        return codec_text[:cut]
    if kind < 0.9:
        return codec_text[:cut] + rng.choice(PIECES) + codec_text[cut:]
    return codec_text[:cut] + chr(rng.randint(32, 126)) + codec_text[cut + 1 :]


@pytest.mark.parametrize("family", list(CODECS))
def test_10000_junk_strings_never_raise(family):
    codec = get_codec(family)
    rng = random.Random(hash(family) % 1000)
    for _ in range(10_000):
        text = _junk(rng)
        wh = rng.choice([(64, 48), (1, 300), (5000, 3), (640, 480)])
        out = codec.decode(text, wh)
        assert out.boxes.shape == (len(out.labels), 4)
        if len(out):
            assert np.isfinite(out.boxes).all()
            assert (out.boxes[:, 2] > out.boxes[:, 0]).all() and (out.boxes[:, 3] > out.boxes[:, 1]).all()
            assert (out.boxes[:, [0, 2]] <= wh[0]).all() and (out.boxes[:, [1, 3]] <= wh[1]).all() and (out.boxes >= 0).all()


@pytest.mark.parametrize("family", list(CODECS))
@pytest.mark.parametrize("bad", [None, 42, b"bytes", "", "   ", "I cannot see any objects."])
def test_non_answers_give_no_boxes(family, bad):
    out = get_codec(family).decode(bad, (100, 100))
    assert len(out) == 0 and out.boxes.shape == (0, 4)


@pytest.mark.parametrize("family", list(CODECS))
def test_bad_image_size_gives_failed_not_exception(family):
    assert get_codec(family).decode("[]", (0, 10)).failed


JSON_CASES = {
    # truncated mid-object: the complete first object survives, the answer counts as failed
    '```json\n[\n\t{"bbox_2d": [10, 20, 30, 40], "label": "cat"},\n\t{"bbox_2d": [50, 6': ([[10, 20, 30, 40]], ["cat"], True),
    # prose around a clean list, no fence
    'Sure! Here they are: [{"bbox_2d": [10, 20, 30, 40], "label": "cat"}] Hope it helps.': ([[10, 20, 30, 40]], ["cat"], False),
    # swapped corners are ordered; values off the image are clipped
    '[{"bbox_2d": [30, 40, 10, 20], "label": "cat"}, {"bbox_2d": [-5, 900, 2000, 1200], "label": "dog"}]': (
        [[10, 20, 30, 40], [0, 900, 1000, 1000]],
        ["cat", "dog"],
        False,
    ),
    # trailing comma, numbers as strings, a box entirely outside (dropped and counted)
    '[{"bbox_2d": ["1", "2", "3", "4"], "label": "a"}, {"bbox_2d": [2000, 2000, 3000, 3000], "label": "b"},]': ([[1, 2, 3, 4]], ["a"], True),
    # a single object instead of a list
    '{"bbox_2d": [1, 2, 3, 4], "label": "a"}': ([[1, 2, 3, 4]], ["a"], False),
    "```json\n[]\n```": ([], [], False),
}


@pytest.mark.parametrize("text", list(JSON_CASES))
def test_json_recovery_cases(text):
    boxes, labels, failed = JSON_CASES[text]
    out = get_codec("qwen3_vl").decode(text, (1000, 1000))  # 0-1000 space == pixels for a 1000x1000 image
    np.testing.assert_allclose(out.boxes, np.array(boxes, dtype=float).reshape(-1, 4))
    assert out.labels == labels and out.failed == failed
    # the same answer for a 200x100 image: the relative space scales to that image
    half = get_codec("qwen3_vl").decode(text, (200, 100))
    np.testing.assert_allclose(half.boxes, np.array(boxes, dtype=float).reshape(-1, 4) * [0.2, 0.1, 0.2, 0.1])


def test_paligemma_and_florence_partial_answers():
    pali = get_codec("paligemma").decode("<loc0000><loc0000><loc0512><loc0512> cat ; <loc0100><loc01", (1024, 1024))
    assert pali.labels == ["cat"] and pali.failed
    flo = get_codec("florence2").decode("cat<loc_0><loc_0><loc_499><loc_499>dog<loc_3>", (1000, 1000))
    assert flo.labels == ["cat"] and flo.failed
    np.testing.assert_allclose(flo.boxes, [[0.5, 0.5, 499.5, 499.5]])
