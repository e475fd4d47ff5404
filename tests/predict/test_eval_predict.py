"""``vlmdet eval`` and ``vlmdet predict`` on a briefly trained tiny model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlmdet.cli import main


def test_eval_writes_metrics_report_and_images_and_compares(short_run, synth_dir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(short_run.output_dir), "--data", str(synth_dir), "--split", "val", "--out", str(out),
                 "--batch-size", "4", "--compare", str(tiny_model_dir("qwen2_5_vl"))])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 2
    for r in metrics.values():
        assert r["n_images"] == 8 and 0.0 <= r["parse_failure_rate"] <= 1.0
        assert set(r["per_class_ap"]) == {"circle", "square", "triangle", "star"}
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 8 and all("text" in p and "boxes" in p for p in preds)
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    report = (out / "report.md").read_text()
    assert "| mAP50 |" in report and "no confidence" in report
    assert len(list((out / "images").glob("*.png"))) == 8
    printed = capsys.readouterr().out
    assert "mAP50" in printed


def test_eval_of_a_broken_answer_counts_parse_failures(tiny_model_dir, synth_dir, tmp_path):
    # the untrained tiny model writes junk: every answer is a counted parse failure, nothing crashes
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir("qwen2_5_vl")), "--data", str(synth_dir), "--out", str(out), "--max-samples", "4", "--max-new-tokens", "12"]) == 0
    r = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    assert r["parse_failure_rate"] == 1.0 and r["map50"] == 0.0


def test_predict_writes_boxes_in_original_pixels_and_images(short_run, synth_dir, tmp_path, capsys):
    img = synth_dir / "test" / "images" / "000001.jpg"
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(short_run.output_dir), str(img), "--out", str(out)]) == 0
    rec = json.loads((out / "predictions.json").read_text())[0]
    w, h = Image.open(img).size
    assert rec["image_wh"] == [w, h]
    for x1, y1, x2, y2 in rec["boxes_xyxy"]:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert (out / "000001_pred.png").is_file()
    assert main(["predict", "--model", str(short_run.output_dir), str(img), "--out", str(out), "--phrase", "the red circle"]) == 0


def test_predict_needs_classes_for_a_bare_model(tiny_model_dir, synth_dir, tmp_path, capsys):
    img = synth_dir / "test" / "images" / "000001.jpg"
    assert main(["predict", "--model", str(tiny_model_dir("qwen2_5_vl")), str(img), "--out", str(tmp_path)]) == 2
    assert "--classes" in capsys.readouterr().err


def test_eval_missing_model_is_a_clear_error(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", str(synth_dir)]) == 2
    assert "Traceback" not in capsys.readouterr().err


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
