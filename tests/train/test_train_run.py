"""Short real training runs through ``vlmdet.train`` (TRL SFTTrainer underneath)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN as FAST
from vlmdet.rows import SETTINGS_FILE, TaskSettings


def test_short_run_lowers_the_eval_loss_and_writes_a_report(short_run):
    result, tmp_path = short_run, short_run.output_dir
    losses = [e["eval_loss"] for e in result.log_history if "eval_loss" in e]
    assert len(losses) >= 2 and losses[-1] < 0.8 * losses[0], losses
    assert result.steps == 30
    # the run saved what later commands need, and the before/after report
    settings = TaskSettings.load(tmp_path)
    assert settings is not None and settings.family == "qwen2_5_vl" and settings.classes == ["circle", "square", "triangle", "star"]
    assert settings.codec_settings == {"factor": 28, "min_pixels": 56 * 56, "max_pixels": 128 * 128}
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) >= {"before", "after", "steps", "train_seconds", "baselines", "baseline_verdict"}
    md = (tmp_path / "report.md").read_text()
    assert "| mAP50 |" in md and "| metric | base model (before) | fine-tuned (after) | baseline: mean box | baseline: whole image |" in md
    # the baselines in the report are those of the training split, scored on the same eval images
    from vlmdet.data.readers import open_dataset
    from vlmdet.metrics.baselines import MEAN_BOX, fit_and_score

    train_ds, val_ds = open_dataset(report["data"], "train"), open_dataset(report["data"], "val")
    expected = fit_and_score(train_ds.samples, val_ds.samples[: report["eval_images"]], settings.classes, "")
    assert report["baselines"]["results"][MEAN_BOX]["map50"] == pytest.approx(expected.results[MEAN_BOX].map50)
    assert result.baselines["results"] == report["baselines"]["results"]
    assert report["baseline_verdict"].startswith("the fine-tuned model ")
    # the in-training detection eval and the per-group gradient norms reached the log history
    assert any("eval_map50" in e for e in result.log_history)
    assert any("grad_norm/language" in e for e in result.log_history)


def _run_cli(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlmdet", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def test_resume_after_a_killed_run_continues_from_the_last_checkpoint(tmp_path, tiny_model_dir, synth_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    args = [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "max_steps=20",
            "save_steps=4", "eval_steps=1000", *FAST, "eval.max_samples=2", "eval.max_new_tokens=8"]
    proc = _run_cli(args, env, start_new_session=True)
    before_file = tmp_path / "before_metrics.json"
    deadline = time.time() + 240
    while not (tmp_path / "checkpoint-8").is_dir():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint-8 within 4 minutes"
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint finish writing, then kill -9 mid-run
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert done and done[-1] < 20, done
    scored_before = before_file.read_text()  # written before the first step
    # a checkpoint being written when the kill came may be incomplete; resume uses the last complete one
    out = subprocess.run([sys.executable, "-m", "vlmdet", "train", *args, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "resuming from" in text
    resumed_from = int(text.split("resuming from", 1)[1].split("checkpoint-", 1)[1].split()[0].strip(".,)"))
    assert resumed_from in done and resumed_from >= 8
    steps = [int(line.split("step", 1)[1].split("|")[0]) for line in text.splitlines() if line.startswith("[vlmdet] step")]
    assert steps and min(steps) > resumed_from, steps  # no step before the checkpoint was run again
    state = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    assert (Path(tmp_path) / SETTINGS_FILE).is_file()
    # the base model was scored once, before the kill; the resumed run reports those figures
    assert "scoring the base model" not in text
    assert before_file.read_text() == scored_before
    assert json.loads((tmp_path / "report.json").read_text())["before"] == json.loads(scored_before)
