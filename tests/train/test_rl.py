"""`vlmdet rl` (TRL GRPO + vlmdet's detection rewards): every decoder-only family, the reward seen by
each completion, resume after SIGKILL, Florence-2 refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoProcessor

from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.families import FAMILIES, get_family
from vlmdet.rows import TaskSettings
from vlmdet.run import RunFolder

FAST_RL = ["num_generations=4", "per_device_train_batch_size=8", "gradient_checkpointing=false", "learning_rate=1e-4", "logging_steps=1",
           "eval.max_samples=4", "eval.batch_size=4", "eval.max_new_tokens=16", "max_completion_length=48"]


def _rl_args(model, data, out, *extra):
    return [f"model={model}", f"data={data}", f"output_dir={out}", "max_steps=2", "save_steps=1000", *FAST_RL, *extra]


@pytest.mark.parametrize("family", [f for f in FAMILIES if get_family(f).answer_layout != "seq2seq"])  # GRPO is decoder-only
def test_two_grpo_steps_per_decoder_only_family(family, tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "rl"
    assert main(["rl", *_rl_args(tiny_model_dir(family), synth_dir, out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "grpo" and report["steps"] == 2 and report["before"] is not None and report["after"] is not None
    steps = report["seconds_per_step"]
    assert steps["time/generation_s"] > 0 and steps["time/update_s"] > 0
    assert json.loads((out / "vlmdet.json").read_text())["family"] == family
    assert "after GRPO" in (out / "report.md").read_text() and (out / "report.html").is_file()
    # the image-blind baselines stand beside the starting checkpoint and the GRPO model
    assert "| starting checkpoint | after GRPO | baseline: mean box | baseline: whole image |" in (out / "report.md").read_text()
    assert report["baseline_verdict"].startswith("the GRPO model ")


def test_florence2_is_refused_with_the_reason(tiny_model_dir, synth_dir, tmp_path, capsys):
    assert main(["rl", *_rl_args(tiny_model_dir("florence2"), synth_dir, tmp_path / "rl")]) == 2
    assert "florence2 is an encoder-decoder" in capsys.readouterr().err


def test_each_completion_is_rewarded_against_its_own_sample(answers, tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    """Every image answers its own perfect target (tests/answering.py), prompts of several lengths
    left-padded in one batch, in groups: any shuffle of completions against samples costs F1."""
    from vlmdet.train.rl import rl
    from vlmdet.train.rl_config import load_config
    from vlmdet.train.trainer import DetectionGRPOTrainer

    monkeypatch.setattr(DetectionGRPOTrainer, "save_model", lambda self, *a, **k: None)  # the stand-in model is no PreTrainedModel

    model = tiny_model_dir("qwen2_5_vl")
    train = open_dataset(synth_dir, "train")
    settings = TaskSettings.for_model("qwen2_5_vl", AutoProcessor.from_pretrained(model), classes=train.classes)
    with_boxes = [s for s in train if len(s.targets[1])]
    assert len({settings.target(s) for s in with_boxes}) == len(with_boxes)  # every image with boxes has its own answer
    answers.register(model, train.samples, settings.target)
    cfg = load_config(None, _rl_args(model, synth_dir, tmp_path / "rl", "task=detect_named", "max_steps=3", "eval.before=false",
                                     "eval.after=false", "eval_split=", "learning_rate=0", "per_device_train_batch_size=12", "num_generations=4", "save_strategy=no", "max_completion_length=256",
                                     "cache_images=false"))  # the answering model knows the images as read from disk
    result = rl(cfg)
    logged = [e for e in result.log_history if "rewards/f1/mean" in e]
    assert len(logged) == 3
    for e in logged:  # 3 different images per step, 4 answers each: all perfect when paired right
        assert e["rewards/f1/mean"] == 1.0 and e["rewards/format/mean"] == 1.0 and e["rewards/count/mean"] == 0.0
        assert e["rewards/duplicates/mean"] == 0.0 and e["rewards/soft_iou/mean"] > 0.95
    # the prompts TRL rendered differ per image (detect_named names each image's classes): several lengths, left-padded
    prompts = [p for call in answers.loaded[-1].calls for p in call["prompts"]]
    assert len({len(p) for p in prompts}) > 1


def test_a_killed_rl_run_resumes_from_its_last_checkpoint(tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "rl"
    args = _rl_args(tiny_model_dir("qwen2_5_vl"), synth_dir, out, "max_steps=12", "save_steps=4", "eval.before=false", "eval.after=false", "eval_split=")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlmdet", "rl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    while RunFolder(out).last_checkpoint() is None:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    last = RunFolder(out).last_checkpoint()
    assert last is not None and int(last.name.split("-")[1]) < 12
    done = subprocess.run([sys.executable, "-m", "vlmdet", "rl", *args, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming from {last}" in done.stdout
    assert json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())["global_step"] == 12
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_rl_scores_with_the_settings_it_was_given_and_trains_each_part_at_its_own_learning_rate(tiny_model_dir, synth_dir, tmp_path):
    # the before/after columns of `vlmdet rl` answer as `generation.*` says and rank boxes by the
    # `eval.confidence` asked for, both recorded in report.json — as `vlmdet train` and `vlmdet eval` do;
    # and lr_vision / lr_projector / lr_language reach the optimizer (one run for both: each check is cheap)
    from transformers import TrainerCallback

    import vlmdet

    seen = {}

    class Groups(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            seen.update({g["name"]: g.get("initial_lr", g["lr"]) for g in optimizer.param_groups})

    out = tmp_path / "rl"
    vlmdet.rl(overrides=_rl_args(tiny_model_dir("qwen2_5_vl"), synth_dir, out, "max_steps=1", "generation.min_new_tokens=3", "eval.confidence=min",
                                 "finetune=full", "lr_vision=1e-6", "lr_projector=2e-5", "lr_language=3e-4"), callbacks=[Groups()])
    report = json.loads((out / "report.json").read_text())
    assert report["decoding"]["overrides"] == {"min_new_tokens": 3} and report["decoding"]["settings"]["min_new_tokens"] == 3
    assert report["confidence"] == "min"
    assert list(report["before"]["by_score"]) == list(report["after"]["by_score"]) == ["min"]
    assert seen == {"vision": 1e-6, "projector": 2e-5, "language": 3e-4}, seen


def test_the_rl_demo_trains_the_sft_demo_first_then_scores_three_models(short_run, synth_dir, tmp_path, monkeypatch, capfd):
    # `vlmdet rl` with no arguments: when its starting model is missing it trains the SFT demo as
    # shipped into that folder, runs GRPO from it, continues the SFT run for GRPO's wall time and
    # scores the three side by side. The SFT runs are stood in for by an already trained run (the
    # SFT demo is 10 minutes; `vlmdet train` itself is tested in tests/train); GRPO and the scoring run.
    import importlib
    import shutil

    from vlmdet.train.rl import rl_demo

    recipe = importlib.import_module("vlmdet.train.recipe")  # `vlmdet.train` the attribute is the function

    calls = []

    def sft_stand_in(cfg):
        calls.append(cfg)
        shutil.copytree(short_run.output_dir, cfg.output_dir, dirs_exist_ok=True)
        return short_run

    monkeypatch.setattr(recipe, "train", sft_stand_in)
    sft, out = tmp_path / "sft", tmp_path / "rl"
    assert rl_demo(_rl_args(sft, synth_dir, out)) == 0
    first, continued = calls
    assert first.model == "tiny:qwen2_5_vl" and first.data == "synth" and Path(first.output_dir) == sft
    assert first.trainer_args["max_steps"] == 2000  # the SFT demo as it ships (configs/demo.yaml)
    grpo = json.loads((out / "report.json").read_text())
    assert grpo["method"] == "grpo" and grpo["steps"] == 2
    assert continued.model == str(sft) and continued.data == str(synth_dir) and Path(continued.output_dir) == out / "sft-continued"
    assert continued.max_seconds == pytest.approx(grpo["train_seconds"], abs=0.05)
    args = continued.trainer_args
    assert (args["lr_scheduler_type"], args["warmup_steps"], args["learning_rate"]) == ("constant", 0, 1e-4)  # GRPO's learning rate
    metrics = json.loads((out / "comparison" / "metrics.json").read_text())
    names = ["SFT (start)", "SFT + GRPO", "SFT continued (same wall time)"]
    assert [metrics[n]["model"] for n in names] == [str(sft), str(out), str(out / "sft-continued")]
    assert all(0 <= metrics[n]["map50"] <= 1 and "mean_reward" in metrics[n] for n in names)
    table = (out / "comparison" / "report.md").read_text()
    assert "| " + " | ".join(names) + " |" in table and "| mean reward |" in table
    err = capfd.readouterr().err  # the progress bars say which scoring of the GRPO run is going on
    assert "before:" in err and "after:" in err
