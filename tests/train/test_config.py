"""`vlmdet train` configuration: YAML + key=value / --key value overrides reach every layer."""

from __future__ import annotations

import pytest

from vlmdet.train.config import DEMO_CONFIG, load_config, parse_overrides


def test_overrides_route_to_vlmdet_sft_and_lora(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: some/model\nsft:\n  learning_rate: 1e-4\n  save_strategy: no\nlora:\n  r: 4\n")
    cfg = load_config(cfg_file, ["finetune=full", "learning_rate=3e-4", "--lora_alpha", "64", "lora.r=8", "eval.max_samples=5",
                                 "gradient_checkpointing_kwargs={use_reentrant: true}", "--freeze-vision", "eval_strategy=no"])
    assert cfg.model == "some/model" and cfg.finetune == "full" and cfg.freeze_vision is True
    assert cfg.sft["learning_rate"] == 3e-4 and isinstance(cfg.sft["learning_rate"], float)
    # YAML 1.1 would turn "no" into False, which TrainingArguments rejects
    assert cfg.sft["save_strategy"] == "no" and cfg.sft["eval_strategy"] == "no"
    assert cfg.sft["gradient_checkpointing_kwargs"] == {"use_reentrant": True}
    assert cfg.lora == {"r": 8, "lora_alpha": 64}
    assert cfg.eval.max_samples == 5


def test_parse_overrides_forms():
    assert parse_overrides(["a.b=1", "--c", "x", "--flag", "--d=2e-5", "e=[1, 2]"]) == [
        ("a.b", 1), ("c", "x"), ("flag", True), ("d", 2e-5), ("e", [1, 2])]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["not_a_thing=1"], "unknown setting 'not_a_thing'"),
        (["finetune=partial"], "finetune must be lora, qlora or full"),
        (["positional"], "use key=value or --key value"),
        (["sft.not_a_field=1"], "not SFTConfig fields"),
    ],
)
def test_bad_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_demo_config_loads_and_every_sft_key_is_valid():
    from trl import SFTConfig

    cfg = load_config(DEMO_CONFIG, ["output_dir=/tmp/x"])
    assert cfg.model == "tiny:qwen2_5_vl" and cfg.data == "synth" and cfg.finetune == "full"
    SFTConfig(output_dir="/tmp/x", **{k: v for k, v in cfg.sft.items()}, use_cpu=True)


def test_max_pixels_sets_the_qwen_budget_and_refuses_other_processors(tiny_model_dir):
    from transformers import AutoProcessor

    from vlmdet.families._qwen import qwen_resize_settings
    from vlmdet.models.loading import set_max_pixels

    qwen = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    set_max_pixels(qwen, 7056)
    assert qwen_resize_settings(qwen)["max_pixels"] == 7056  # the codec sees the same budget
    smol = AutoProcessor.from_pretrained(tiny_model_dir("smolvlm"))
    with pytest.raises(ValueError, match="leave max_pixels unset"):
        set_max_pixels(smol, 7056)
