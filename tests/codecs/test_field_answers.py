"""Answers as models really write them (from the families' cookbooks, model cards and fine-tuning
docs), and the one label policy every codec applies (vlmdet.codecs.labels)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmdet.codecs import CODECS, get_codec
from vlmdet.codecs.labels import ClassMatcher, clean_label, match_classes
from vlmdet.rows import TaskSettings

WH = (1000, 500)
CLASSES = ["cat", "dog", "person", "traffic light"]
CAT = [100.0, 100.0, 300.0, 200.0]  # 0-1000 values [100, 200, 300, 400] on a 1000x500 image
DOG = [500.0, 250.0, 600.0, 350.0]  # [500, 500, 600, 700]


def decoded(family: str, text: str, classes=CLASSES):
    return get_codec(family).decode(text, WH, classes=classes)


JSON_ANSWERS = {
    # Qwen's cookbook falls back to ast.literal_eval: chat VLMs do answer with Python literals
    "python literal": ("[{'bbox_2d': [100, 200, 300, 400], 'label': 'cat'}, {'bbox_2d': [500, 500, 600, 700], 'label': 'dog'}]", [CAT, DOG], ["cat", "dog"]),
    "python literal in a python fence": ("```python\n[{'bbox_2d': [100, 200, 300, 400], 'label': 'cat'}]\n```", [CAT], ["cat"]),
    "thinking model (Qwen3-VL Thinking)": (
        '<think>\nThe user wants cats. I see one cat at [100, 200] and maybe {"a": 1}.\n</think>\n\n```json\n[\n\t{"bbox_2d": [100, 200, 300, 400], "label": "cat"}\n]\n```',
        [CAT], ["cat"]),
    "R1-style answer tags": ('<think>two animals</think><answer>[{"bbox_2d": [100, 200, 300, 400], "label": "cat"}, {"bbox_2d": [500, 500, 600, 700], "label": "dog"}]</answer>',
                             [CAT, DOG], ["cat", "dog"]),
    "answer tags, unclosed (cut off)": ('<answer>[{"bbox_2d": [100, 200, 300, 400], "label": "cat"}, {"bbox_2d": [500, 500, 6', [CAT], ["cat"]),
    "list wrapped in an object": ('{"objects": [{"bbox_2d": [100, 200, 300, 400], "label": "cat"}, {"bbox_2d": [500, 500, 600, 700], "label": "dog"}]}',
                                  [CAT, DOG], ["cat", "dog"]),
    "list wrapped two levels deep": ('{"result": {"detections": [{"bbox": [100, 200, 300, 400], "class": "cat"}]}}', [CAT], ["cat"]),
    # the wrapper's other lists (empty, or of names) come first: the box list is still the one found
    "list wrapped beside other lists": ('{"warnings": [], "classes": ["cat"], "objects": [{"bbox_2d": [100, 200, 300, 400], "label": "cat"}]}',
                                        [CAT], ["cat"]),
    "corners as two points": ('[{"bbox_2d": [[100, 200], [300, 400]], "label": "cat"}]', [CAT], ["cat"]),
    "points are not boxes (Qwen point_2d)": ('[{"point_2d": [346, 328], "label": "person"}, {"bbox_2d": [100, 200, 300, 400], "label": "cat"}]', [CAT], ["cat"]),
    "labels in the class's case, plural, spaced": (
        '[{"bbox_2d": [100, 200, 300, 400], "label": "Cats"}, {"bbox_2d": [500, 500, 600, 700], "label": " Traffic   Lights "}]', [CAT, DOG], ["cat", "traffic light"]),
    "irregular plural": ('[{"bbox_2d": [100, 200, 300, 400], "label": "people"}]', [CAT], ["person"]),
    "unknown label kept as written": ('[{"bbox_2d": [100, 200, 300, 400], "label": "Zebra"}]', [CAT], ["Zebra"]),
}


@pytest.mark.parametrize("family", ["qwen3_vl", "json"])
@pytest.mark.parametrize("case", JSON_ANSWERS, ids=list(JSON_ANSWERS))
def test_json_answers_from_the_field(family, case):
    text, boxes, labels = JSON_ANSWERS[case]
    d = decoded(family, text)
    assert d.labels == labels, (case, d)
    np.testing.assert_allclose(d.boxes, np.array(boxes).reshape(-1, 4), atol=1e-6)
    assert len(d.spans) == len(labels) and all(0 <= a < b <= len(text) for a, b in d.spans)
    for (a, b), label_written in zip(d.spans, labels):
        assert "bbox" in text[a:b] or "box" in text[a:b]  # each confidence is read where its box was written


def test_what_counts_as_a_failed_answer():
    assert not decoded("qwen3_vl", JSON_ANSWERS["python literal"][0]).failed
    assert not decoded("qwen3_vl", JSON_ANSWERS["list wrapped in an object"][0]).failed
    assert decoded("qwen3_vl", JSON_ANSWERS["points are not boxes (Qwen point_2d)"][0]).skipped == 1  # the point, counted
    unfinished = decoded("qwen3_vl", '<think>I see a cat at [{"bbox_2d": [100, 200, 300, 400], "label": "cat"}] so')
    assert len(unfinished) == 0 and unfinished.failed  # reasoning cut off: its draft is not the answer
    empty = decoded("qwen3_vl", '[{"bbox_2d": [100, 200, 300, 400], "label": ""}, {"bbox_2d": [500, 500, 600, 700], "label": "  "}]')
    assert len(empty) == 0 and empty.skipped == 2 and empty.failed


def test_python_literals_are_read_without_running_code():
    d = decoded("json", "[{'bbox_2d': [100, 200, 300, 400], 'label': __import__('os').getcwd()}]")
    assert len(d) == 0 and d.failed


FLORENCE = {
    # Florence-2 <OD>: label then four <loc_N> per box; a phrase may carry several boxes
    "two objects": ("cat<loc_100><loc_200><loc_300><loc_400>dog<loc_500><loc_500><loc_600><loc_700>", ["cat", "dog"], 0),
    "one cut short, then the next": ("cat<loc_100><loc_200><loc_300>dog<loc_500><loc_500><loc_600><loc_700>", ["dog"], 1),
    "a location token cut mid-way": ("cat<loc_100><loc_200><loc_3dog<loc_500><loc_500><loc_600><loc_700>", ["dog"], 1),
    "a stray token tail": ("cat<loc_100><loc_200><loc_300><loc_400>loc_5>dog<loc_500><loc_500><loc_600><loc_700>", ["cat", "dog"], 0),
    "the answer ran out": ("cat<loc_100><loc_200><loc_300><loc_400>dog<loc_5", ["cat"], 1),
    "a label with no boxes at the end": ("cat<loc_100><loc_200><loc_300><loc_400>dog", ["cat"], 1),
    "plural label": ("</s><s>Cats<loc_100><loc_200><loc_300><loc_400></s>", ["cat"], 0),
}


@pytest.mark.parametrize("case", FLORENCE, ids=list(FLORENCE))
def test_florence_cut_short_objects_never_leak_into_the_next_label(case):
    text, labels, skipped = FLORENCE[case]
    d = get_codec("florence2").decode(text, (1000, 1000), classes=CLASSES)
    assert d.labels == labels and d.skipped == skipped, d
    assert not any("loc" in label or "<" in label or ">" in label for label in d.labels)
    assert d.failed == (skipped > 0 or "loc_5>" in text)


def test_paligemma_and_qwen2_vl_follow_the_same_label_policy():
    pali = get_codec("paligemma").decode("<loc0409><loc0102><loc0819><loc0307> Cats ; <loc0010><loc0010><loc0100><loc0100> people", WH, classes=CLASSES)
    assert pali.labels == ["cat", "person"]
    qwen2 = get_codec("qwen2_vl").decode("<|object_ref_start|>Dogs<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>", WH, classes=CLASSES)
    assert qwen2.labels == ["dog"]
    thinking = get_codec("qwen2_vl").decode("<think>hmm</think><|object_ref_start|>dog<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>", WH)
    assert thinking.labels == ["dog"] and not thinking.failed


@pytest.mark.parametrize("family", sorted(CODECS))
def test_the_policy_is_the_same_for_every_codec(family):
    """Encode a class, decode it written in another case and with extra spaces: every codec gives the class."""
    codec = get_codec(family)
    text = codec.encode([[100, 100, 300, 200]], ["traffic light"], WH)
    variant = text.replace("traffic light", "Traffic  Lights")
    d = codec.decode(variant, WH, classes=CLASSES)
    assert d.labels == ["traffic light"], (family, variant, d)
    assert codec.decode(variant, WH).labels == ["Traffic Lights"]  # no class list: only whitespace is cleaned


def test_task_settings_match_detection_labels_but_not_grounding_phrases():
    det = TaskSettings(family="qwen3_vl", classes=CLASSES)
    assert det.decode('[{"bbox_2d": [1, 2, 30, 40], "label": "Cats"}]', WH).labels == ["cat"]
    ground = TaskSettings(family="qwen3_vl", task="ground", classes=CLASSES)
    assert ground.decode('[{"bbox_2d": [1, 2, 30, 40], "label": "Cats"}]', WH).labels == ["Cats"]


def test_ambiguous_folds_map_to_nothing():
    m = ClassMatcher(["Cat", "cat", "dog"])
    assert m("Cat") == "Cat" and m("cat") == "cat" and m("CAT") == "CAT" and m("cats") == "cats"
    assert m("Dogs") == "dog"
    assert match_classes(["Dogs"], None) == ["Dogs"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6))
def test_matching_gives_a_class_or_the_label_itself(label, classes):
    out = ClassMatcher(classes)(label)
    assert out == label or out in classes
    if label in classes:
        assert out == label
    assert clean_label(clean_label(label)) == clean_label(label)


INTERNVL = {
    # InternVL writes every instance of a reference in one <box>
    "several boxes per reference": ("<ref>cat</ref><box>[[100, 200, 300, 400], [500, 500, 600, 700]]</box>", ["cat", "cat"], False),
    "one line per object, plural": ("<ref>cats</ref><box>[[100, 200, 300, 400]]</box>\n<ref>Dog</ref><box>[[500, 500, 600, 700]]</box>", ["cat", "dog"], False),
    "spaces and floats": ("<ref> cat </ref><box>[[ 100.0 ,200, 300 , 400.5 ]]</box>", ["cat"], False),
    "cut inside the box": ("<ref>cat</ref><box>[[100, 200, 300, 400]]</box><ref>dog</ref><box>[[500, 500, 6", ["cat"], True),
    "a box with no reference": ("<box>[[100, 200, 300, 400]]</box>", [], True),
}


@pytest.mark.parametrize("case", INTERNVL, ids=list(INTERNVL))
def test_internvl_answers(case):
    text, labels, failed = INTERNVL[case]
    d = get_codec("internvl").decode(text, WH, classes=CLASSES)
    assert d.labels == labels and d.failed == failed, d
    if labels:
        np.testing.assert_allclose(d.boxes[0], [100.0, 100.0, 300.0, 200.0], atol=0.5)
