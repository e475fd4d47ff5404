"""Exact target texts (what the model is trained to write) for each family."""

from __future__ import annotations

from vlmdet.codecs import get_codec

BOXES = [[64.0, 48.0, 320.0, 240.0], [0.0, 0.0, 640.0, 480.0]]
LABELS = ["cat", "dog house"]
WH = (640, 480)


def test_qwen2_5_vl_target_is_fenced_json_in_resized_pixels():
    # 640x480 -> smart_resize(factor 28) -> 644x476
    text = get_codec("qwen2_5_vl").encode(BOXES, LABELS, WH)
    assert text == (
        "```json\n[\n"
        '\t{"bbox_2d": [64, 48, 322, 238], "label": "cat"},\n'
        '\t{"bbox_2d": [0, 0, 644, 476], "label": "dog house"}\n'
        "]\n```"
    )


def test_qwen2_5_vl_uses_the_processor_max_pixels():
    # with max_pixels 128*128 the same image is resized to 140x84: coordinates shrink accordingly
    codec = get_codec("qwen2_5_vl", max_pixels=128 * 128)
    assert codec.model_wh(WH) == (140, 84)
    assert '"bbox_2d": [14, 8, 70, 42]' in codec.encode(BOXES[:1], LABELS[:1], WH)


def test_qwen3_vl_and_json_targets_are_relative_1000():
    assert '"bbox_2d": [100, 100, 500, 500]' in get_codec("qwen3_vl").encode(BOXES[:1], ["cat"], WH)
    assert get_codec("json").encode(BOXES[:1], ["cat"], WH) == '[{"bbox_2d": [100, 100, 500, 500], "label": "cat"}]'
    assert get_codec("json").encode([], [], WH) == "[]"
    assert get_codec("qwen3_vl").encode([], [], WH) == "```json\n[]\n```"


def test_qwen2_vl_target():
    assert get_codec("qwen2_vl").encode(BOXES[:1], ["cat"], WH) == (
        "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>"
    )


def test_paligemma_target_is_y_first_1024_bins():
    assert get_codec("paligemma").encode(BOXES, LABELS, WH) == (
        "<loc0102><loc0102><loc0512><loc0512> cat ; <loc0000><loc0000><loc1023><loc1023> dog house"
    )


def test_florence2_target_is_x_first_floor_1000_bins():
    assert get_codec("florence2").encode(BOXES, LABELS, WH) == (
        "cat<loc_100><loc_100><loc_500><loc_500>dog house<loc_0><loc_0><loc_999><loc_999>"
    )
