"""The Python API (vlmdet.train / rl / evaluate / export / doctor): the CLI's settings and messages,
exceptions instead of exits, result objects that show in Jupyter, Ctrl-C that names the checkpoint,
and an ``import vlmdet`` that loads no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import TrainerCallback

import vlmdet
from tests.conftest import FAST_TRAIN
from vlmdet.cli import main
from vlmdet.config import ConfigError


def test_import_vlmdet_loads_no_torch_and_every_public_name_resolves():
    code = (
        "import sys, time; t = time.perf_counter(); import vlmdet; dt = time.perf_counter() - t; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules); "
        "f = vlmdet.train; heavy2 = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
        "print(repr((dt, heavy, heavy2, callable(f))))"
    )
    dt, heavy, heavy2, ok = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    print(f"import vlmdet: {dt * 1000:.0f} ms")
    assert heavy == [] and heavy2 == [] and ok, (heavy, heavy2)
    missing = [n for n in vlmdet.__all__ if not hasattr(vlmdet, n)]
    assert missing == []
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        vlmdet.trian


def test_the_functions_survive_importing_the_modules_of_the_same_name():
    import vlmdet.doctor.checks  # noqa: F401
    import vlmdet.evaluate  # noqa: F401
    import vlmdet.export  # noqa: F401
    import vlmdet.train.recipe  # noqa: F401

    from vlmdet import commands

    assert (vlmdet.train, vlmdet.rl, vlmdet.evaluate, vlmdet.export, vlmdet.doctor) == (
        commands.train, commands.rl, commands.evaluate, commands.export, commands.doctor)
    assert sys.modules["vlmdet.train"].__name__ == "vlmdet.train"


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    prefix = f"vlmdet {argv[0]}: error: "
    assert err.startswith(prefix) and err.endswith(" (VLMDET_DEBUG=1 shows the traceback)"), err
    return err[len(prefix): -len(" (VLMDET_DEBUG=1 shows the traceback)")]


@pytest.mark.parametrize(("cli", "kwargs"), [
    (["max_stepz=3"], {"max_stepz": 3}),
    (["learning_rate=fast"], {"learning_rate": "fast"}),
    (["lora.r=many"], {"lora": {"r": "many"}}),
    (["lora.rank=4"], {"lora": {"rank": 4}}),
    (["eval.max_sample=4"], {"eval": {"max_sample": 4}}),
])
def test_bad_settings_raise_the_cli_message(capsys, tmp_path, cli, kwargs):
    message = _cli_error(capsys, ["train", f"output_dir={tmp_path}", *cli])
    with pytest.raises(ConfigError) as info:
        vlmdet.train(output_dir=str(tmp_path), **kwargs)
    assert str(info.value) == message


def test_missing_files_raise_not_exit(capsys, tmp_path):
    message = _cli_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(FileNotFoundError) as info:
        vlmdet.train(tmp_path / "nope.yaml")
    assert str(info.value) == message
    message = _cli_error(capsys, ["eval", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data")])
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        vlmdet.evaluate(tmp_path / "no-model", tmp_path / "no-data")
    assert str(info.value) == message
    with pytest.raises((FileNotFoundError, ValueError)):
        vlmdet.export(tmp_path / "no-model", tmp_path / "out")


def test_keyword_settings_equal_the_command_line_and_update_a_section_key_by_key(tmp_path):
    from vlmdet.train.config import load_config

    yaml = tmp_path / "my.yaml"
    yaml.write_text("model: tiny:qwen2_5_vl\nlora:\n  r: 4\n  lora_alpha: 32\nsft:\n  max_steps: 7\n")
    by_cli = load_config(yaml, ["learning_rate=1e-4", "lora.r=8", "synth.classes=[a, b]", "eval.max_samples=3"])
    by_python = load_config(yaml, learning_rate=1e-4, lora={"r": 8}, synth={"classes": ("a", "b")}, eval={"max_samples": 3})
    assert by_cli == by_python
    assert by_python.lora["r"] == 8 and by_python.lora["lora_alpha"] == 32  # the file's other LoRA key kept
    assert by_python.trainer_args["max_steps"] == 7 and by_python.trainer_args["learning_rate"] == 1e-4


class _StopAt(TrainerCallback):
    """Ctrl-C as a notebook's "interrupt kernel" delivers it: KeyboardInterrupt inside the training loop."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _settings(tiny_model_dir, synth_dir, out, **kw):
    return dict(overrides=FAST_TRAIN, model=str(tiny_model_dir("qwen2_5_vl")), data=str(synth_dir), output_dir=str(out), **kw)


def test_train_evaluate_export_doctor_from_python(tiny_model_dir, synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    result = vlmdet.train(**_settings(tiny_model_dir, synth_dir, out, max_steps=12, save_steps=1000, eval_strategy="no"))
    assert isinstance(result, vlmdet.TrainResult) and result.steps == 12 and result.output_dir == out
    assert result.before is not None and result.after is not None and 0 <= result.after["map50"] <= 1
    assert set(result.baselines["results"]) == {"baseline: mean box", "baseline: whole image"}
    assert [e["step"] for e in result.history if "loss" in e] == [5, 10]
    assert result.report == out / "report.html" and result.report.is_file()
    page = result._repr_html_()
    assert "<table class='metrics'>" in page and page.count("<img") == 3
    for column in ("base model (before)", "fine-tuned (after)", "baseline: mean box", "baseline: whole image"):
        assert f"<th>{column}</th>" in page
    assert "<td>mAP50</td>" in page and "<td>parse failures</td>" in page
    assert result.verdict() and "baseline" in result.verdict()

    scores = vlmdet.evaluate(out, synth_dir, split="val", out=tmp_path / "eval", max_samples=4, batch_size=4)
    assert isinstance(scores, vlmdet.EvalResult)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scores.metrics == metrics and scores.map50() == metrics[str(out)]["map50"]
    page = scores._repr_html_()
    assert f"<th>{out}</th>" in page and "<th>baseline: mean box</th>" in page and "<img" in page

    exported = vlmdet.export(out, tmp_path / "export")
    assert exported.output_dir == tmp_path / "export" and "vlmdet.json" in exported.files and "config.json" in exported.files
    detections = vlmdet.Detector.from_pretrained(exported.output_dir).predict(str(next((synth_dir / "val" / "images").iterdir())))
    assert detections.xyxy.shape[1] == 4

    checks = vlmdet.doctor(**_settings(tiny_model_dir, synth_dir, tmp_path / "doctor-run"), checks=["labels", "coordinates"], out=tmp_path / "doctor")
    assert isinstance(checks, vlmdet.DoctorResult) and checks.ok and [c.name for c in checks] == ["labels", "coordinates"]
    assert checks.summary() == "doctor: 2/2 checks passed" and "PASS" in checks._repr_html_()


def test_interrupting_train_names_the_checkpoint_and_resumes(tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    settings = _settings(tiny_model_dir, synth_dir, out, max_steps=8, save_steps=3, eval_strategy="no")
    with pytest.raises(vlmdet.Interrupted) as info:
        vlmdet.train(callbacks=[_StopAt(4)], **settings)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.checkpoint == out / "checkpoint-3"
    assert str(info.value).startswith(f"vlmdet train: interrupted; last checkpoint {out}/checkpoint-3 — resume with: vlmdet.train(")
    assert str(info.value).endswith("resume=True)") and f"overrides={FAST_TRAIN!r}" in str(info.value)
    assert not (out / "vlmdet.json").exists()  # nothing written as if the run had finished
    result = vlmdet.train(resume=True, **settings)  # the same process (the kernel) goes on
    assert result.steps == 8 and (out / "vlmdet.json").is_file()


def test_interrupted_before_the_first_checkpoint(tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(vlmdet.Interrupted, match="interrupted before the first checkpoint; nothing saved") as info:
        vlmdet.train(callbacks=[_StopAt(1)], **_settings(tiny_model_dir, synth_dir, out, max_steps=8, save_steps=5, eval_strategy="no",
                                                       eval={"before": False}))
    assert info.value.checkpoint is None


def test_rl_from_python_returns_the_grpo_result_and_refuses_bad_rewards(tiny_model_dir, synth_dir, tmp_path, capsys):
    from tests.train.test_rl import FAST_RL

    base = dict(model=str(tiny_model_dir("qwen2_5_vl")), data=str(synth_dir), max_steps=2, save_steps=1000, eval={"max_samples": 4, "batch_size": 4})
    result = vlmdet.rl(overrides=FAST_RL, output_dir=str(tmp_path / "rl"), **base)
    assert isinstance(result, vlmdet.TrainResult) and result.steps == 2
    assert result.names == ("starting checkpoint", "after GRPO") and result.before is not None and result.after is not None
    assert any("reward" in e for e in result.history)
    page = result._repr_html_()
    assert "<th>after GRPO</th>" in page and "<th>baseline: mean box</th>" in page
    message = _cli_error(capsys, ["rl", *FAST_RL, *(f"{k}={v}" for k, v in base.items() if k != "eval"), f"output_dir={tmp_path / 'bad'}", "rewards.f1=oops"])
    with pytest.raises(ConfigError) as info:
        vlmdet.rl(overrides=FAST_RL, output_dir=str(tmp_path / "bad"), rewards={"f1": "oops"}, **{k: v for k, v in base.items() if k != "eval"})
    assert str(info.value) == message
    with pytest.raises(ValueError, match="vlmdet.rl needs a config or settings"):
        vlmdet.rl()


def test_interrupting_rl_names_the_checkpoint_and_the_call_that_resumes(tiny_model_dir, synth_dir, tmp_path):
    from tests.train.test_rl import FAST_RL

    out = tmp_path / "rl"
    settings = dict(overrides=FAST_RL, model=str(tiny_model_dir("qwen2_5_vl")), data=str(synth_dir), output_dir=str(out), max_steps=4, save_steps=1,
                    eval={"before": False, "after": False})
    with pytest.raises(vlmdet.Interrupted) as info:
        vlmdet.rl(callbacks=[_StopAt(2)], **settings)
    assert info.value.checkpoint == out / "checkpoint-1"  # stopped in step 2, before its save
    assert str(info.value).startswith(f"vlmdet rl: interrupted; last checkpoint {out}/checkpoint-1 — resume with: vlmdet.rl(")
    assert f"overrides={FAST_RL!r}" in str(info.value) and str(info.value).endswith("resume=True)")


def test_an_eval_of_several_datasets_shows_each_with_its_own_images_and_baselines(tiny_model_dir, synth_dir, tmp_path):
    from vlmdet.data.synth import write_synthetic_coco

    other = write_synthetic_coco(tmp_path / "other", seed=5, splits={"train": 8, "val": 4})
    scores = vlmdet.evaluate(tiny_model_dir("qwen2_5_vl"), [synth_dir, other], split="val", out=tmp_path / "ev", max_samples=3, max_new_tokens=4,
                            generation={"repetition_penalty": 1.3})
    assert len(scores.evals) == 2
    page = scores._repr_html_()
    sections = page.split("vlmdet eval: ")[1:]
    assert [s.split("<", 1)[0].strip() for s in sections] == list(scores.evals)
    for name, section in zip(scores.evals, sections):
        own = json.loads((tmp_path / "ev" / name / "metrics.json").read_text())
        assert section.count("<img") == len(list((tmp_path / "ev" / name / "images").glob("*.png"))) > 0
        assert "<th>baseline: mean box</th>" in section and own["baselines"]["results"]
        # the generation settings reach every model's decoding (metrics.json states them)
        assert own[str(tiny_model_dir("qwen2_5_vl"))]["decoding"]["overrides"] == {"repetition_penalty": 1.3}


def test_the_doctor_table_in_a_notebook_has_one_row_per_check_and_the_fix_of_a_failure():
    from vlmdet.doctor.checks import CheckResult

    result = vlmdet.DoctorResult([CheckResult("labels", True, "the answer only"), CheckResult("coordinates", False, "boxes off by 2x", fix="set family=qwen2_5_vl")])
    page = result._repr_html_()
    assert page.startswith("<p>vlmdet doctor: 1/2 checks passed; FAILED: coordinates</p><table>")
    rows = page.split("</th></tr>", 1)[1].removesuffix("</table>")
    assert rows == ("<tr><td>PASS</td><td>labels</td><td style='text-align:left'>the answer only</td></tr>"
                    "<tr><td><b>FAIL</b></td><td>coordinates</td><td style='text-align:left'>boxes off by 2x<br><i>fix:</i> set family=qwen2_5_vl</td></tr>")
