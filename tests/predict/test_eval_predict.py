"""``vlmdet eval`` and ``vlmdet predict`` around the model: junk answers, bare models, missing folders,
adapter folders. (Real boxes through the same commands: tests/predict/test_eval_with_answers.py.)"""

from __future__ import annotations

import json

from vlmdet.cli import main


def test_eval_of_a_broken_answer_counts_parse_failures(tiny_model_dir, synth_dir, tmp_path):
    # the untrained tiny model writes junk: every answer is a counted parse failure, nothing crashes
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir("qwen2_5_vl")), "--data", str(synth_dir), "--out", str(out), "--max-samples", "4", "--max-new-tokens", "12"]) == 0
    r = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    assert r["parse_failure_rate"] == 1.0 and r["map50"] == 0.0 and r["n_images"] == 4
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["parse_failed"] for p in preds] == [True] * 4 and all(p["boxes"] == [] for p in preds)


def test_predict_needs_classes_for_a_bare_model(tiny_model_dir, synth_dir, tmp_path, capsys):
    img = synth_dir / "test" / "images" / "000001.jpg"
    assert main(["predict", "--model", str(tiny_model_dir("qwen2_5_vl")), str(img), "--out", str(tmp_path)]) == 2
    assert "--classes" in capsys.readouterr().err


def test_eval_missing_model_is_a_clear_error(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", str(synth_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model folder {tmp_path / 'nope'} does not exist" in err
    assert main(["eval", "--model", "someone/not-in-the-cache", "--data", str(synth_dir)]) == 2
    assert "not a local folder and not in the hub cache" in capsys.readouterr().err


def test_a_lora_adapter_folder_loads_on_its_base_with_the_base_family(tiny_model_dir, tmp_path):
    # A bare PEFT adapter folder (no vlmdet.json): the family comes from the base model's config.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmdet.predict.loading import load_for_inference

    base = tiny_model_dir("qwen3_vl")
    peft_model = get_peft_model(AutoModelForImageTextToText.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoProcessor.from_pretrained(base).save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "config.json").exists()

    model, _, settings = load_for_inference(tmp_path / "adapter", classes=["circle"])
    assert settings.family == "qwen3_vl" and settings.classes == ["circle"]
    assert getattr(model, "peft_config", None), "the adapter was not applied"
