"""The detection rewards on hand-made answers: each part, and the total, moves the right way."""

from __future__ import annotations

import numpy as np
import pytest

from vlmdet.codecs import get_codec
from vlmdet.rewards import DEFAULT_WEIGHTS, count_penalty, duplicate_penalty, f1_reward, format_reward, score_parts, soft_iou_reward, total

WH = (200, 100)
GT = np.array([[10, 10, 50, 50], [100, 20, 160, 80]], float)
LABELS = ["cat", "dog"]
CODEC = get_codec("qwen3_vl")


def parts_of(text: str) -> dict[str, float]:
    return score_parts(CODEC.decode(text, WH), GT, LABELS)


def answer(boxes, labels) -> str:
    return CODEC.encode(np.asarray(boxes, float).reshape(-1, 4), labels, WH)


CASES = {
    "perfect": answer(GT, LABELS),
    "empty": answer([], []),
    "one missed": answer(GT[:1], LABELS[:1]),
    "one extra": answer(np.vstack([GT, [[170, 70, 195, 95]]]), LABELS + ["dog"]),
    "swapped labels": answer(GT, ["dog", "cat"]),
    "duplicated box": answer(np.vstack([GT, GT[:1]]), LABELS + ["cat"]),
    "whole image": answer([[0, 0, 200, 100]], ["cat"]),
    "malformed": "I see a cat and a dog.",
    "truncated": answer(GT, LABELS)[:-30],
}


def test_a_perfect_answer_scores_the_maximum_of_every_part():
    p = parts_of(CASES["perfect"])
    assert p == {"f1": 1.0, "soft_iou": pytest.approx(1.0, abs=0.01), "format": 1.0, "duplicates": 0.0, "count": 0.0}
    best = total(p, DEFAULT_WEIGHTS)
    for name, text in CASES.items():
        if name != "perfect":
            assert total(parts_of(text), DEFAULT_WEIGHTS) < best, name


@pytest.mark.parametrize(
    ("case", "f1", "count", "duplicates", "format_"),
    [
        ("empty", 0.0, -1.0, 0.0, 1.0),
        ("one missed", 2 * 1 / 3, -0.5, 0.0, 1.0),
        ("one extra", 2 * 2 / 5, -0.5, 0.0, 1.0),
        ("swapped labels", 0.0, 0.0, 0.0, 1.0),  # boxes right, labels wrong: no same-label match
        ("duplicated box", 2 * 2 / 5, -0.5, -1 / 3, 1.0),  # the repeat never earns twice
        ("whole image", 0.0, -0.5, 0.0, 1.0),
        ("malformed", 0.0, -1.0, 0.0, 0.0),
        ("truncated", 2 * 1 / 3, -0.5, 0.0, 0.0),  # the complete first object is kept, the answer is flagged
    ],
)
def test_each_part_on_hand_made_answers(case, f1, count, duplicates, format_):
    p = parts_of(CASES[case])
    assert p["f1"] == pytest.approx(f1, abs=1e-9) and p["count"] == pytest.approx(count) and p["duplicates"] == pytest.approx(duplicates)
    assert p["format"] == format_


def test_soft_iou_rewards_a_box_that_roughly_covers_its_object():
    rough = answer([[15, 15, 55, 55], GT[1]], LABELS)  # first box shifted: IoU ~0.6
    assert 0.6 < parts_of(rough)["soft_iou"] < parts_of(CASES["perfect"])["soft_iou"]
    assert parts_of(answer([[30, 30, 70, 70], GT[1]], LABELS))["f1"] == pytest.approx(0.5)  # IoU < 0.5: f1 sees only one
    assert parts_of(answer([[30, 30, 70, 70], GT[1]], LABELS))["soft_iou"] > 0.5  # soft_iou still credits it
    assert soft_iou_reward(GT, LABELS, GT, LABELS) == pytest.approx(1.0) and soft_iou_reward([], [], [], []) == 1.0
    assert parts_of(CASES["whole image"])["soft_iou"] < 0.1  # boxing everything is not a way to earn


def test_a_reward_called_without_the_sample_index_or_the_token_ids_says_what_it_needs():
    from vlmdet.rewards import _Part

    part = _Part("f1", lambda i, ids: {"f1": 1.0})
    assert part(completions=["x"], completion_ids=[[1, 2]], sample_index=[0]) == [1.0]
    for given in ({"completion_ids": [[1, 2]]}, {"sample_index": [0]}, {}):
        with pytest.raises(ValueError, match="need the dataset's sample_index column and TRL's completion_ids"):
            part(completions=["x"], **given)


def test_the_parts_as_functions():
    assert f1_reward([], [], [], []) == 1.0 and f1_reward(GT, LABELS, [], []) == 0.0
    assert format_reward(True) == 0.0 and format_reward(False) == 1.0
    assert duplicate_penalty(np.vstack([GT, GT]), LABELS * 2) == -0.5 and duplicate_penalty([], []) == 0.0
    assert count_penalty(0, 0) == 0.0 and count_penalty(10, 2) == -1.0 and count_penalty(3, 2) == -0.5
