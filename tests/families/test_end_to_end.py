"""Every family through the same commands: train (short run), eval, predict and doctor.

qwen2_5_vl runs these paths in tests/train, tests/predict and tests/doctor; here the other
families go through exactly the same entry points, the family read from the model's config.
"""

from __future__ import annotations

import json

import pytest

from PIL import Image

from tests.conftest import FAST_TRAIN
from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.doctor import run_doctor
from vlmdet.train.config import load_config
from vlmdet.train.recipe import train

from vlmdet.families import FAMILIES as REGISTERED

# every registered family (qwen2_5_vl runs these paths in tests/train, tests/predict and tests/doctor)
FAMILIES = [f for f in REGISTERED if f != "qwen2_5_vl"]
# Gemma 2 (logit soft-capping, 1024 <loc> tokens) and the tiny BART at a lower rate start slower
STEPS = {"paligemma": 60, "florence2": 60}
# the tiny BART collapses to one answer for every image at 5e-3 (the doctor's overfit rate at 2e-3)
LR = {"florence2": "1e-3"}


@pytest.mark.parametrize("family", FAMILIES)
def test_short_run_lowers_the_loss_then_eval_and_predict_decode(family, tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    steps = STEPS.get(family, 30)
    cfg = load_config(None, [f"model={tiny_model_dir(family)}", f"data={synth_dir}", f"output_dir={out}", f"max_steps={steps}",
                             f"eval_steps={steps}", "eval_on_start=true", "save_steps=1000", *FAST_TRAIN, f"learning_rate={LR.get(family, '2e-3')}"])
    result = train(cfg)
    losses = [e["eval_loss"] for e in result.log_history if "eval_loss" in e]
    train_losses = [e["loss"] for e in result.log_history if "loss" in e]
    assert train_losses[-1] < 0.6 * train_losses[0], train_losses
    # held-out loss falls too (less on PaliGemma: a wrong guess among 1024 <loc> bins costs more)
    assert len(losses) >= 2 and losses[-1] < 0.9 * losses[0], losses
    assert json.loads((out / "vlmdet.json").read_text())["family"] == family  # read from the config, not given

    ev = tmp_path / "eval"
    assert main(["eval", "--model", str(out), "--data", str(synth_dir), "--out", str(ev), "--batch-size", "4"]) == 0
    # the trained folder is scored on the whole val split, with the classes it was trained on
    val = open_dataset(synth_dir, "val")
    r = next(iter(json.loads((ev / "metrics.json").read_text()).values()))
    assert r["n_images"] == len(val) and r["n_gt"] == sum(len(s.targets[1]) for s in val)
    assert set(r["per_class_ap"]) == set(json.loads((out / "vlmdet.json").read_text())["classes"])

    img = synth_dir / "test" / "images" / "000001.jpg"
    assert main(["predict", "--model", str(out), str(img), "--out", str(tmp_path / "pred")]) == 0
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]["image_wh"] == list(Image.open(img).size)


@pytest.mark.parametrize("family", FAMILIES)
def test_doctor_passes_every_check(family, tiny_model_dir, synth_dir, tmp_path):
    cfg = load_config(None, [f"model={tiny_model_dir(family)}", f"data={synth_dir}", f"output_dir={tmp_path}", "finetune=full",
                             f"learning_rate={LR.get(family, '2e-3')}"])
    results = run_doctor(cfg)
    assert [r.name for r in results] == ["labels", "coordinates", "gradients", "overfit"]
    assert all(r.ok for r in results), [r.lines() for r in results if not r.ok]
