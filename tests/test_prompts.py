from __future__ import annotations

import pytest

from vlmdet.prompts import PROMPT_STYLES, Task, build_prompt


def test_detect_prompts_per_style():
    t = Task("detect", ("cat", "dog"))
    assert build_prompt(t, "chat_json") == (
        'Locate every instance that belongs to the following categories: "cat, dog". Report bbox coordinates in JSON format.'
    )
    assert build_prompt(t, "paligemma") == "detect cat ; dog"
    assert build_prompt(t, "florence2") == "<OD>"
    assert build_prompt(t, "qwen2_vl") == "Detect all objects of these categories: cat, dog."


def test_named_and_grounding_prompts():
    assert build_prompt(Task("detect_named", ("cat",)), "florence2") == "<OPEN_VOCABULARY_DETECTION>cat"
    assert build_prompt(Task("detect_named", ("cat", "dog")), "paligemma") == "detect cat ; dog"
    g = Task("ground", phrase="the red car")
    assert build_prompt(g, "chat_json") == 'Locate "the red car" in the image. Report bbox coordinates in JSON format.'
    assert build_prompt(g, "paligemma") == "detect the red car"
    assert build_prompt(g, "florence2") == "<CAPTION_TO_PHRASE_GROUNDING>the red car"
    assert build_prompt(g, "qwen2_vl") == "Find <|object_ref_start|>the red car<|object_ref_end|>"


def test_every_style_answers_every_task():
    for style in PROMPT_STYLES:
        for task in (Task("detect", ("a",)), Task("detect_named", ("a", "b")), Task("ground", phrase="x")):
            assert build_prompt(task, style)


@pytest.mark.parametrize("kwargs", [{"kind": "segment", "classes": ("a",)}, {"kind": "ground"}, {"kind": "detect"}])
def test_bad_tasks(kwargs):
    with pytest.raises(ValueError):
        Task(**kwargs)


def test_unknown_style():
    with pytest.raises(ValueError, match="unknown prompt style"):
        build_prompt(Task("detect", ("a",)), "nope")
