"""Runs that would lose or mix work: a finished run overwritten, a resume from another run's
checkpoint, Ctrl-C, a LoRA run that only evaluates from the folder it was trained in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN, as_a_terminal_starts_it
from vlmdet.cli import main
from vlmdet.run import RUN_FILE, RunFolder, fingerprint
from vlmdet.train.config import load_config

QUIET = ["eval.before=false", "eval.after=false", "eval_steps=1000"]


def _args(tiny_model_dir, synth_dir, out, *extra):
    return [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={out}", "max_steps=2", "save_steps=2", *FAST_TRAIN, *QUIET, *extra]


def test_a_finished_run_is_never_overwritten_silently(tiny_model_dir, synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *_args(tiny_model_dir, synth_dir, out)]) == 0
    assert json.loads((out / RUN_FILE).read_text())["status"] == "finished"
    weights = (out / "model.safetensors").read_bytes()

    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "learning_rate=1e-3")]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == weights  # untouched

    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "learning_rate=1e-3"), "--overwrite"]) == 0
    info = json.loads((out / RUN_FILE).read_text())
    assert info["status"] == "finished" and info["fingerprint"]["settings"]["sft.learning_rate"] == 1e-3


def test_resume_only_continues_the_same_run(tiny_model_dir, synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    synth_dir = Path(shutil.copytree(synth_dir, tmp_path / "data"))  # this test edits its annotations
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4")]) == 0
    info = json.loads((out / RUN_FILE).read_text())
    info["status"] = "running"  # as if it had been killed after its last checkpoint
    (out / RUN_FILE).write_text(json.dumps(info))
    shutil.rmtree(out / "checkpoint-4")

    # a new run into the folder of an unfinished one: refused, naming --resume
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4")]) == 2
    assert "holds an unfinished run (last checkpoint: checkpoint-2). Continue it with --resume" in capsys.readouterr().err
    # other settings: refused, naming the setting
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4", "learning_rate=1e-3"), "--resume"]) == 2
    assert "belong to a run with other settings (sft.learning_rate: 0.002 then, 0.001 now)" in capsys.readouterr().err
    # the same settings, but the data file changed under them (one box less): refused
    ann_file = synth_dir / "train" / "annotations.json"
    original = ann_file.read_text()
    ann = json.loads(original)
    ann["annotations"] = ann["annotations"][:-1]
    ann_file.write_text(json.dumps(ann))
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4"), "--resume"]) == 2
    assert "the data changed since the run" in capsys.readouterr().err
    ann_file.write_text(original)
    # the same run: continues from checkpoint-2 and finishes
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4"), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert json.loads((out / RUN_FILE).read_text())["status"] == "finished"
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    # checkpoints from before run.json existed: nothing to check them against, so no resume
    (out / RUN_FILE).unlink()
    assert main(["train", *_args(tiny_model_dir, synth_dir, out, "max_steps=4"), "--resume"]) == 2
    assert (f"{out} holds checkpoints without a run fingerprint (written by an older vlmdet): vlmdet cannot check that they belong to this "
            "run. Start again with --overwrite, or resume with the vlmdet version that wrote them") in capsys.readouterr().err


def test_fingerprint_ignores_launch_settings_only(tmp_path, synth_dir):
    from vlmdet.data.readers import open_dataset

    train, val = open_dataset(synth_dir, "train"), open_dataset(synth_dir, "val")
    a = fingerprint(load_config(None, [f"output_dir={tmp_path}"]), train, val)
    b = fingerprint(load_config(None, [f"output_dir={tmp_path / 'moved'}", "eval.batch_size=2", "logging_steps=1", "--resume"]), train, val)
    c = fingerprint(load_config(None, [f"output_dir={tmp_path}", "max_steps=7"]), train, val)
    assert a == b and a["settings"] != c["settings"]
    assert fingerprint(load_config(None, []), train, None)["data_hash"] != a["data_hash"]


def test_ctrl_c_says_where_the_last_checkpoint_is_and_exits_130(tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, synth_dir, out, "max_steps=100000")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}  # SIGABRT dumps every thread's stack
    # started as a terminal starts it (SIGINT default, unblocked), whatever the test runner holds
    proc = subprocess.Popen([sys.executable, "-m", "vlmdet", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=as_a_terminal_starts_it)
    deadline = time.time() + 180
    while RunFolder(out).last_checkpoint() is None:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # the hang seen in whole-suite runs: say where every thread of the run is stuck
        os.killpg(proc.pid, signal.SIGABRT)
        stdout, stderr = proc.communicate(timeout=60)
        raise AssertionError(f"the interrupted run did not exit within 120 s; its threads:\n{stderr[-6000:]}") from None
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    line = next(x for x in stderr.splitlines() if "interrupted" in x)
    assert f"last checkpoint {out}/checkpoint-" in line and line.endswith("--resume")
    assert "resume with: vlmdet train " + " ".join(args) in line


def test_a_lora_run_evaluates_from_any_directory_and_when_moved(tmp_path, synth_dir, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    tiny = ["tiny.hidden_size=64", "tiny.vision_hidden_size=32", "tiny.vision_intermediate_size=64", "tiny.intermediate_size=128"]
    assert main(["train", "model=tiny:qwen2_5_vl", f"data={synth_dir}", "output_dir=run", "finetune=lora", "max_steps=2", "save_steps=1000",
                 "per_device_train_batch_size=4", "gradient_checkpointing=false", *QUIET, *tiny]) == 0
    base = json.loads((first / "run" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base) == first / "run" / "base-qwen2_5_vl"
    monkeypatch.chdir(second)
    eval_args = ["--data", str(synth_dir), "--max-samples", "2", "--max-new-tokens", "4"]
    assert main(["eval", "--model", str(first / "run"), "--out", "ev", *eval_args]) == 0
    # the whole run folder moved elsewhere (its base-* model inside it): still loads
    shutil.move(str(first / "run"), str(second / "moved"))
    assert main(["eval", "--model", "moved", "--out", "ev2", *eval_args]) == 0


def test_a_bare_adapter_folder_evaluates_with_its_base_models_processor(tiny_model_dir, synth_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tiny_model_dir("qwen2_5_vl")
    peft_model = get_peft_model(AutoModelForImageTextToText.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    assert not any((tmp_path / "adapter" / f).exists() for f in ("processor_config.json", "tokenizer_config.json"))
    assert main(["eval", "--model", str(tmp_path / "adapter"), "--data", str(synth_dir), "--max-samples", "2", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "ev")]) == 0


@pytest.mark.parametrize("kind", ["a file", "unwritable"])
def test_an_output_dir_that_cannot_hold_a_run_is_refused_before_anything_loads(kind, tmp_path, synth_dir, capsys):
    if kind == "a file":
        out = tmp_path / "f"
        out.write_text("x")
        message = "is a file, not a folder"
    else:
        out = Path("/proc/vlmdet-cannot-write-here")
        message = "is not writable"
    assert main(["train", f"data={synth_dir}", "model=./not-loaded", f"output_dir={out}"]) == 2
    assert message in capsys.readouterr().err
