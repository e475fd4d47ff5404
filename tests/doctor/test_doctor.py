"""``vlmdet doctor`` passes on a correct setup and fails, with the cause, on broken ones."""

from __future__ import annotations

import pytest

from vlmdet.cli import main
from vlmdet.doctor import run_doctor
from vlmdet.train.config import load_config


def _cfg(tmp_path, tiny_model_dir, synth_dir, *extra):
    return load_config(None, [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "finetune=full", "learning_rate=2e-3", *extra])


def test_correct_setup_passes_every_check(tmp_path, tiny_model_dir, synth_dir, capsys):
    code = main(["doctor", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "finetune=full", "learning_rate=2e-3"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("labels", "coordinates", "gradients", "overfit"):
        assert f"[PASS] {name}" in out
    assert (tmp_path / "doctor" / "doctor_labels.html").is_file()
    assert list((tmp_path / "doctor").glob("doctor_coords_*_model_view_*.png"))


def test_labels_over_the_prompt_fail(tmp_path, tiny_model_dir, synth_dir):
    (r,) = run_doctor(_cfg(tmp_path, tiny_model_dir, synth_dir, "labels=all"), checks=["labels"])
    assert not r.ok and "differs from the target" in " ".join(r.details) and "image tokens are trained" in " ".join(r.details)
    assert "completion-only" in r.fix


def test_coordinates_in_the_wrong_space_fail(tmp_path, tiny_model_dir, synth_dir):
    (r,) = run_doctor(_cfg(tmp_path, tiny_model_dir, synth_dir, "target_space=original"), checks=["coordinates"])
    assert not r.ok and "quantisation steps" in " ".join(r.details)
    assert "coordinate space" in r.cause


def test_frozen_adapters_fail(tmp_path, tiny_model_dir, synth_dir, monkeypatch):
    import vlmdet.train.model as model_mod

    real = model_mod.setup_trainable

    def freeze_adapters(model, family, cfg):  # the classic blanket freeze after get_peft_model
        model = real(model, family, cfg)
        for name, p in model.named_parameters():
            if "lora_" in name and "visual" not in name:
                p.requires_grad_(False)
        for name, p in model.named_parameters():
            if "merger" in name:
                p.requires_grad_(True)
        return model

    monkeypatch.setattr(model_mod, "setup_trainable", freeze_adapters)
    (r,) = run_doctor(_cfg(tmp_path, tiny_model_dir, synth_dir, "finetune=lora"), checks=["gradients"])
    assert not r.ok and "no adapter parameter is trainable" in r.summary and "frozen" in r.cause


def test_gradients_cut_off_by_checkpointing_fail(tmp_path, tiny_model_dir, synth_dir, monkeypatch):
    """Reentrant checkpointing with no input-grad hooks: adapters get no gradient — and doctor says so."""
    import vlmdet.train.model as model_mod
    from transformers import PreTrainedModel

    monkeypatch.setattr(model_mod, "enable_input_grads", lambda model, family: None)
    monkeypatch.setattr(PreTrainedModel, "enable_input_require_grads", lambda self: None)
    cfg = _cfg(tmp_path, tiny_model_dir, synth_dir, "finetune=lora", "gradient_checkpointing=true", "gradient_checkpointing_kwargs={use_reentrant: true}")
    (r,) = run_doctor(cfg, checks=["gradients"])
    assert not r.ok and "none" in " ".join(r.details)
    assert "reentrant" in r.cause
