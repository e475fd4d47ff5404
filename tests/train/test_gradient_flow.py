"""After one optimizer step, every trainable parameter gets a finite, non-zero gradient.

Checked for LoRA, LoRA + vision LoRA, full and frozen-vision setups, with gradient checkpointing on
(non-reentrant, vlmdet's default — and reentrant, where vlmdet's input-grad hooks must save it).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmdet.data.readers import open_dataset
from vlmdet.families import FAMILIES, get_family
from vlmdet.rows import TaskSettings
from vlmdet.train.collator import DetectionCollator
from vlmdet.train.config import TrainConfig
from vlmdet.train.model import param_group, setup_trainable, trainable_summary

SETUPS = {
    "lora": dict(finetune="lora"),
    "lora+vision_lora": dict(finetune="lora", lora_vision=True),
    "lora+projector": dict(finetune="lora", freeze_projector=False),
    "full": dict(finetune="full"),
    "full_frozen_vision": dict(finetune="full", freeze_vision=True),
}


def _batch(model_dir, family, synth_dir):
    processor = AutoProcessor.from_pretrained(model_dir)
    ds = open_dataset(synth_dir, "train")
    settings = TaskSettings.for_model(family, processor, classes=ds.classes)
    samples = [s for s in ds.samples if len(s.boxes)][:4]
    return DetectionCollator(processor, layout=get_family(family).answer_layout)([settings.row(s) for s in samples])


def _two_steps(model, batch):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss


# Every setup with vlmdet's default (non-reentrant) checkpointing; reentrant checkpointing only
# where it bites: frozen inputs feeding trained adapters (vlmdet's input-grad hooks must save it).
CASES = [(setup, False) for setup in SETUPS] + [("lora", True), ("lora+vision_lora", True)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("setup", "reentrant"), CASES)
def test_every_trainable_parameter_gets_a_gradient(family, setup, reentrant, tiny_model_dir, synth_dir):
    path = tiny_model_dir(family)
    fam = get_family(family)
    cfg = TrainConfig(model=str(path), sft={"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": reentrant}}, **SETUPS[setup])
    model = setup_trainable(AutoModelForImageTextToText.from_pretrained(path), fam, cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    counts = trainable_summary(model, fam)
    if setup.startswith("lora"):
        assert counts["adapters"] > 0 and counts["language"] == 0 and counts["vision"] == 0
    if setup == "lora+vision_lora":
        assert any("lora_" in n and any(p in n for p in fam.vision_prefixes) for n, _ in model.named_parameters())
    if setup == "lora":  # LM targets must stay out of the vision MLP (same module names there)
        assert not any("lora_" in n and any(p in n for p in fam.vision_prefixes) for n, _ in model.named_parameters())
    if setup == "lora+projector":
        assert counts["projector"] > 0
    if setup == "full_frozen_vision":
        assert counts["vision"] == 0 and counts["projector"] > 0 and counts["language"] > 0
    loss = _two_steps(model, _batch(path, family, synth_dir))
    assert torch.isfinite(loss)
    bad = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None or not torch.isfinite(p.grad).all() or float(p.grad.abs().sum()) == 0.0:
            bad.append((name, param_group(name, fam), None if p.grad is None else float(p.grad.abs().sum())))
    assert not bad, f"trainable parameters without a usable gradient: {bad[:8]}"
