"""``vlmdet doctor`` passes on a correct setup and fails, with the cause, on broken ones."""

from __future__ import annotations

import pytest

from vlmdet.cli import main


def test_correct_setup_passes_every_check(tmp_path, tiny_model_dir, synth_dir, capsys):
    code = main(["doctor", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "finetune=full", "learning_rate=2e-3"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("labels", "coordinates", "gradients", "overfit"):
        assert f"[PASS] {name}" in out
    # after the overfit step: the model that learned its two images beats the image-blind mean box on them
    import re

    m = re.search(r"against the image-blind mean box \(fitted on \d+ training images\): F1@0.5 ([\d.]+) vs ([\d.]+)", out)
    assert m and float(m.group(1)) == 1.0 and float(m.group(2)) < 1.0, out
    assert (tmp_path / "doctor" / "doctor_labels.html").is_file()
    assert list((tmp_path / "doctor").glob("doctor_coords_*_model_view_*.png"))


def _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, check, *extra) -> tuple[int, str]:
    """`vlmdet doctor` through the CLI: (exit code, printed text)."""
    code = main(["doctor", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "finetune=full",
                 "learning_rate=2e-3", "--checks", check, *extra])
    return code, capsys.readouterr().out


def test_labels_over_the_prompt_fail(tmp_path, tiny_model_dir, synth_dir, capsys):
    code, out = _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, "labels", "labels=all")
    assert code == 1 and "[FAIL] labels" in out and "FAILED: labels" in out
    assert "differs from the target" in out and "image tokens are trained" in out and "completion-only" in out


def test_coordinates_in_the_wrong_space_fail(tmp_path, tiny_model_dir, synth_dir, capsys):
    code, out = _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, "coordinates", "target_space=original")
    assert code == 1 and "[FAIL] coordinates" in out and "quantisation steps" in out and "coordinate space" in out


def test_frozen_adapters_fail(tmp_path, tiny_model_dir, synth_dir, monkeypatch, capsys):
    from vlmdet.train import model as model_mod

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
    code, out = _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, "gradients", "finetune=lora")
    assert code == 1 and "[FAIL] gradients: LoRA run but no adapter parameter is trainable" in out and "frozen" in out


def test_gradients_cut_off_by_checkpointing_fail(tmp_path, tiny_model_dir, synth_dir, monkeypatch, capsys):
    """Reentrant checkpointing with no input-grad hooks: adapters get no gradient — and doctor says so."""
    from vlmdet.train import model as model_mod
    from transformers import PreTrainedModel

    monkeypatch.setattr(model_mod, "enable_input_grads", lambda model, family: None)
    monkeypatch.setattr(PreTrainedModel, "enable_input_require_grads", lambda self: None)
    code, out = _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, "gradients", "finetune=lora", "gradient_checkpointing=true",
                        "gradient_checkpointing_kwargs={use_reentrant: true}")
    assert code == 1 and "[FAIL] gradients" in out and "     none: " in out and "reentrant" in out


def test_an_image_the_model_ignores_fails_the_overfit_check(tmp_path, tiny_model_dir, synth_dir, monkeypatch, capsys):
    """A model whose language side never sees the image can only memorise one answer for two images."""
    from vlmdet.train import model as model_mod

    real = model_mod.setup_trainable

    def blind(model, family, cfg):  # every image reaches the model as the same grey picture
        import functools

        model = real(model, family, cfg)
        forward = model.forward

        @functools.wraps(forward)  # keeps the signature generate() checks its arguments against
        def grey(*a, pixel_values=None, **k):
            return forward(*a, pixel_values=None if pixel_values is None else pixel_values * 0, **k)

        model.forward = grey
        return model

    monkeypatch.setattr(model_mod, "setup_trainable", blind)
    code, out = _doctor(tmp_path, tiny_model_dir, synth_dir, capsys, "overfit", "--overfit-steps", "100")  # the correct setup passes within 100
    assert code == 1 and "[FAIL] overfit" in out and "does not reach the language model" in out
    assert "against the image-blind mean box" in out  # (a memorised answer can still beat the mean box on one of the two)


def test_an_unknown_check_is_a_clear_error(tmp_path, tiny_model_dir, synth_dir, capsys):
    code = main(["doctor", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "--checks", "labels,speling"])
    assert code == 2 and "unknown doctor check(s) speling" in capsys.readouterr().err


def test_the_rl_reward_check_passes_and_fails_through_the_cli(tmp_path, tiny_model_dir, synth_dir, capsys):
    args = ["doctor", "--rl", f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "--checks", "rewards"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[PASS] rewards: the ground truth scores highest and the empty answer lowest" in out
    assert "image-blind mean box " in out  # the baseline's answer is among those the ground truth must beat
    assert main([*args, "rewards.f1=-1"]) == 1  # a weight that rewards missing the objects
    out = capsys.readouterr().out
    assert "[FAIL] rewards" in out and "scores" in out and "keep every reward weight >= 0" in out
