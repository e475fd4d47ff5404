"""The model card vlmdet writes into run folders and exports (README.md), in place of TRL's generic one."""

import json

import pytest
from huggingface_hub import ModelCard

from vlmdet.cli import main
from vlmdet.report.card import card_text


def _card(folder):
    card = ModelCard.load(folder / "README.md")
    return card, {(r.metric_type, r.dataset_split): r.metric_value for r in (card.data.eval_results or [])}


def test_run_folder_card_says_what_the_model_is_and_carries_the_scores(short_run):
    out = short_run.output_dir
    report = json.loads((out / "report.json").read_text())
    card, scores = _card(out)
    text = (out / "README.md").read_text()
    assert "huggingface.co/None" not in text and "[None]" not in text  # TRL's generic card is gone
    # the Hub's model-index holds the fine-tuned model's scores, as report.json has them
    assert scores[("mAP50", "val")] == pytest.approx(report["after"]["map50"], abs=1e-4)
    assert scores[("mAP50-95", "val")] == pytest.approx(report["after"]["map"], abs=1e-4)
    assert card.data.library_name == "transformers" and "vlmdet" in card.data.tags and "qwen2_5_vl" in card.data.tags
    settings = json.loads((out / "vlmdet.json").read_text())
    # family, codec and its space, the classes and the exact prompt the model was trained with
    assert "`qwen2_5_vl`" in text and "resized_pixels" in text
    assert all(f"`{c}`" in text for c in settings["classes"])
    from vlmdet.rows import TaskSettings
    from vlmdet.prompts import Task, build_prompt

    ts = TaskSettings.load(out)
    assert build_prompt(Task("detect", tuple(ts.classes)), ts.family_spec.prompt_style) in text
    # data counts, the before/after/baseline table, decoding, how to load it both ways
    run = json.loads((out / "run.json").read_text())["fingerprint"]
    assert f"{run['train_samples']} training images, {run['eval_samples']} evaluation images" in text
    assert "base model (before)" in text and "fine-tuned (after)" in text and "mean box" in text.lower()
    assert "greedy decoding" in text
    assert "Detector.from_pretrained" in text and f"{ts.family_spec.auto_class}.from_pretrained" in text
    assert str(out.parent) not in text  # no local paths of the user's machine


def test_export_card_keeps_the_run_scores_and_names_the_export(short_run, tmp_path):
    exp = tmp_path / "export"
    assert main(["export", "--model", str(short_run.output_dir), "--out", str(exp), "--dtype", "float32"]) == 0
    _, run_scores = _card(short_run.output_dir)
    card, scores = _card(exp)
    assert scores == run_scores
    text = (exp / "README.md").read_text()
    assert "Exported in float32 (full weights)" in text and "generation_config.json" in text
    assert f'Detector.from_pretrained("{exp.name}")' in text


def test_unscored_run_card_says_so_and_has_no_scores(tiny_model_dir, synth_dir, tmp_path):
    from tests.conftest import FAST_TRAIN

    out = tmp_path / "run"
    assert main(["train", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={out}", "max_steps=2", "save_strategy=no",
                 *FAST_TRAIN, "eval.before=false", "eval.after=false", "eval_steps=1000"]) == 0
    card, scores = _card(out)
    assert scores == {}
    assert "This run was not scored" in (out / "README.md").read_text()


def test_a_folder_without_vlmdet_json_gets_no_card(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no vlmdet.json"):
        card_text(tmp_path)
