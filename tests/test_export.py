"""vlmdet export: a LoRA run (adapters on the language model and the vision tower, the projector in
modules_to_save) merged into its base answers exactly as the adapters do, and loads with plain
transformers; full runs copy clean; refusals write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import FAST_TRAIN
from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.rows import TaskSettings

PLAIN = r"""
import json, sys
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
folder, image, prompt = sys.argv[1:4]
model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(folder)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[[Image.open(image).convert("RGB")]], text=[text], return_tensors="pt")
out = model.generate(**inputs)  # generation_config.json decides the decoding
new = out[0, inputs["input_ids"].shape[1]:].tolist()
ends = {model.generation_config.eos_token_id} if isinstance(model.generation_config.eos_token_id, int) else set(model.generation_config.eos_token_id)
ends |= {processor.tokenizer.pad_token_id}
cut = next((i for i, t in enumerate(new) if t in ends), len(new))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("vlmdet", "peft"))
print(json.dumps({"answer": processor.tokenizer.decode(new[:cut]).strip(), "loaded": loaded, "generation": model.generation_config.to_diff_dict()}))
"""


def _train(out, model, data, *extra):
    args = [f"model={model}", f"data={data}", f"output_dir={out}", "max_steps=6", "save_strategy=no", *FAST_TRAIN, "eval.before=false",
            "eval.after=false", "eval_steps=1000", "eval.max_new_tokens=24", *extra]
    assert main(["train", *args]) == 0


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, synth_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("lora") / "run"
    _train(run, tiny_model_dir("qwen2_5_vl"), synth_dir, "finetune=lora", "lora_vision=true", "freeze_projector=false", "learning_rate=5e-3")
    assert (run / "adapter_config.json").is_file()
    return run


def _answers(folder, images):
    from vlmdet import Detector

    return [d.metadata["answer"] for d in Detector.from_pretrained(folder).predict(images)]


def test_merged_lora_answers_as_the_adapters_and_loads_without_vlmdet_or_peft(lora_run, tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--model", str(lora_run), "--out", str(out), "--merge", "--dtype", "float32"]) == 0
    assert {"config.json", "model.safetensors", "generation_config.json", "vlmdet.json", "export.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("adapter_*")) and not list(out.glob("checkpoint-*"))

    # the merge reached every part the run trained: language adapters, vision adapters, the projector
    base = load_file(str(tiny_model_dir("qwen2_5_vl") / "model.safetensors"))
    merged = load_file(str(out / "model.safetensors"))
    assert set(merged) == set(base)
    changed = {k for k in base if not (base[k] == merged[k]).all()}
    assert any(k.startswith("model.layers") and "q_proj" in k for k in changed), sorted(changed)[:10]
    assert any("visual.blocks" in k and "attn" in k for k in changed), sorted(changed)[:10]
    assert any("visual.merger" in k for k in changed), sorted(changed)[:10]

    ds = open_dataset(synth_dir, "val")
    images = [s.image_path for s in ds.samples[:4]]
    adapter, exported = _answers(lora_run, images), _answers(out, images)
    assert exported == adapter  # fp32 on CPU: the same answers, token for token

    settings = TaskSettings.load(out)
    plain = subprocess.run([sys.executable, "-c", PLAIN, str(out), str(images[0]), settings.prompt(ds.samples[0])],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    got = json.loads(plain.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []  # plain transformers: neither vlmdet nor PEFT
    assert got["answer"] == adapter[0]  # generation_config.json is vlmdet's decoding
    assert got["generation"].get("max_new_tokens") == 24 and not got["generation"].get("do_sample")


def test_lora_without_merge_is_refused_and_nothing_is_written(lora_run, tmp_path, capsys):
    assert main(["export", "--model", str(lora_run), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is a LoRA run" in err and "add --merge" in err and not (tmp_path / "x").exists()


def test_push_to_hub_offline_fails_in_one_line_before_writing(lora_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", "--model", str(lora_run), "--out", str(tmp_path / "x"), "--merge", "--push-to-hub", "me/model"]) == 2
    err = capsys.readouterr().err
    assert "cannot push to the hub (me/model)" in err and "Nothing was written" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_qlora_run_merges_through_a_dequantised_base_and_says_so(lora_run, tmp_path, capsys):
    import shutil

    qlora = tmp_path / "qlora"
    shutil.copytree(lora_run, qlora)
    cfg = json.loads((qlora / "train_config.json").read_text())
    assert cfg["finetune"] == "lora"
    (qlora / "train_config.json").write_text(json.dumps({**cfg, "finetune": "qlora"}))  # as a GPU QLoRA run records itself
    assert main(["export", "--model", str(qlora), "--out", str(tmp_path / "e"), "--merge"]) == 0
    out = capsys.readouterr().out
    assert "QLoRA run: merging the adapters into the base model de-quantised" in out and "vlmdet eval" in out
    record = json.loads((tmp_path / "e" / "export.json").read_text())
    assert record["finetune"] == "qlora" and record["merged"] and record["dtype"] == "bfloat16"
    assert record["family"] == "qwen2_5_vl" and record["source"] == str(qlora) and record["generation"]  # what export.json promises to record
    assert not list((tmp_path / "e").glob("adapter_*"))


def test_full_run_copies_clean_in_the_chosen_dtype(tiny_model_dir, synth_dir, tmp_path, capsys):
    import torch

    run = tmp_path / "full"
    _train(run, tiny_model_dir("smolvlm"), synth_dir)
    out = tmp_path / "export"
    assert main(["export", "--model", str(run), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(out / "model.safetensors")).values() if t.is_floating_point())
    assert not {"train_config.json", "run.json", "report.md"} & {p.name for p in out.iterdir()}
    assert TaskSettings.load(out) == TaskSettings.load(run)
    # an existing, non-empty folder is not replaced without --overwrite
    assert main(["export", "--model", str(run), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", "--model", str(run), "--out", str(out), "--overwrite", "--dtype", "float32"]) == 0
    assert all(t.dtype == torch.float32 for t in load_file(str(out / "model.safetensors")).values() if t.is_floating_point())
