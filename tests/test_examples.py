"""examples/: the TRL script that keeps its own SFTTrainer/GRPOTrainer and takes vlmdet's parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_trl_script_trains_with_plain_trl_trainers(tmp_path):
    result = _load("own_trl_script").main(["--out", str(tmp_path), "--steps", "40", "--grpo-steps", "2"])
    losses = result["losses"]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0], losses  # the plain SFTTrainer learns with vlmdet's collator
    assert result["grad_problems"] == []  # every group received gradients
    assert [h["step"] for h in result["eval_history"]] == [20, 40]  # the detection callback scored during training
    assert {"map50", "f1_50", "parse_failure_rate"} <= set(result["after"])
    assert len(result["rewards"]) == 2 and all(-3 <= r <= 3 for r in result["rewards"])  # vlmdet's rewards inside GRPOTrainer


def test_the_collator_of_the_example_trains_on_the_answer_only(tmp_path):
    """What the example passes to SFTTrainer: labels are exactly the target text (and the end of turn)."""
    import vlmdet
    from transformers import AutoProcessor

    model_dir = vlmdet.build_tiny_model("qwen2_5_vl", tmp_path / "m")
    data = vlmdet.write_synthetic_coco(tmp_path / "d", seed=1, splits={"train": 4})
    ds = vlmdet.open_dataset(data, "train")
    processor = AutoProcessor.from_pretrained(model_dir)
    settings = vlmdet.TaskSettings.for_model("qwen2_5_vl", processor, classes=ds.classes)
    rows = vlmdet.RowSource(ds.samples, settings).dataset()
    batch = vlmdet.DetectionCollator(processor)([rows[i] for i in range(2)])
    for k in range(2):
        labels = batch["labels"][k]
        text = processor.tokenizer.decode(labels[labels != -100].tolist())
        assert text.startswith(settings.target(ds[k])) and text[len(settings.target(ds[k])):].strip() in ("<|im_end|>", "<|im_end|>\n")
        image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert (batch["input_ids"][k] == image_id).any() and torch.all(labels[batch["input_ids"][k] == image_id] == -100)
