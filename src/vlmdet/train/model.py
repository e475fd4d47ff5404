"""Deciding which parameters train: LoRA, QLoRA, full, frozen towers (shared by every training method).

Parameter groups (used for freezing, learning rates and gradient-norm logs) come from the family's
name prefixes: ``vision`` (the vision tower), ``projector`` (vision -> text), ``language`` (the rest)
and ``adapters`` (LoRA weights wherever they sit).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vlmdet.families import Family

GROUPS = ("vision", "projector", "language", "adapters")


def param_group(name: str, family: Family) -> str:
    """Which of :data:`GROUPS` a parameter belongs to, from its (possibly PEFT-prefixed) name."""
    if "lora_" in name:
        return "adapters"
    if any(p in name for p in family.projector_prefixes):
        return "projector"
    if any(p in name for p in family.vision_prefixes):
        return "vision"
    return "language"


def lora_target_regex(family: Family, vision: bool, targets: list[str] | None = None) -> str:
    """A PEFT ``target_modules`` regex: LoRA on the language model only (+ vision attention if asked).

    Plain names like ``gate_proj`` would also match the Qwen vision MLP; the regex keeps the
    language-model targets out of the vision tower and projector.
    """
    names = targets or list(family.lora_targets)
    towers = "|".join(re.escape(p) for p in family.vision_prefixes + family.projector_prefixes)
    lm = rf"^(?!.*(?:{towers})).*\.(?:{'|'.join(re.escape(t) for t in names)})$"
    if not vision:
        return lm
    vis = "|".join(re.escape(p) for p in family.vision_prefixes)
    vt = "|".join(re.escape(t) for t in family.vision_lora_targets)
    return rf"(?:{lm})|(?:^.*(?:{vis}).*\.(?:{vt})$)"


def enable_input_grads(model: torch.nn.Module, family: Family) -> None:
    """Make the first activations of both towers require grad (needed by reentrant checkpointing).

    With *reentrant* gradient checkpointing, a checkpointed block whose input does not require
    grad passes no gradient to the parameters inside it — the classic "grad_norm 0 with LoRA"
    failure. transformers >= 5 hooks every sub-model's input embedding, including the Qwen vision
    patch embedding (its ``_input_embed_layer``); older versions, and families whose vision tower
    names no input embedding, hook only the text side, so vlmdet adds any vision hook still missing.
    """
    model.enable_input_require_grads()
    for name, module in model.named_modules():
        if any(name.endswith(p) for p in family.vision_prefixes if "embed" in p) and not module._forward_hooks:
            module.register_forward_hook(lambda m, i, o: o.requires_grad_(True) if isinstance(o, torch.Tensor) and o.is_floating_point() else o)


def _projector_modules(model: torch.nn.Module, family: Family) -> list[str]:
    """Names for PEFT's ``modules_to_save`` that cover the projector.

    PEFT can only wrap leaf-ish modules, not a ``ModuleList`` (Qwen3-VL's deepstack mergers are
    one), so a list is expanded into its items (``deepstack_merger_list.0``, ...).
    """
    names: list[str] = []
    for name, module in model.named_modules():
        for prefix in family.projector_prefixes:
            if name.endswith(prefix):
                tail = prefix.split(".")[-1]
                if isinstance(module, torch.nn.ModuleList):
                    names += [f"{tail}.{i}" for i in range(len(module))]
                else:
                    names.append(tail)
    return sorted(set(names))


def setup_trainable(model: torch.nn.Module, family: Family, cfg: Any) -> torch.nn.Module:
    """Apply ``cfg.finetune`` (lora | qlora | full) and the freeze options; return the model to train.

    ``cfg`` needs: finetune, freeze_vision, freeze_projector, lora_vision, lora (dict of LoraConfig
    fields) and the trainer section (``cfg.trainer_args``: gradient checkpointing settings).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    args = cfg.trainer_args
    gc = args.get("gradient_checkpointing", True)
    gc_kwargs = args.get("gradient_checkpointing_kwargs") or {"use_reentrant": False}
    if cfg.finetune == "full":
        for name, p in model.named_parameters():
            group = param_group(name, family)
            p.requires_grad_(not ((group == "vision" and cfg.freeze_vision) or (group == "projector" and cfg.freeze_projector)))
    else:
        if cfg.finetune == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs=gc_kwargs)
        lora_kwargs = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM", **cfg.lora}
        targets = lora_kwargs.pop("target_modules", None)
        if targets is None or isinstance(targets, list):
            targets = lora_target_regex(family, cfg.lora_vision, targets)
        if not cfg.freeze_projector:
            saved = list(lora_kwargs.pop("modules_to_save", None) or [])
            lora_kwargs["modules_to_save"] = saved + _projector_modules(model, family)
        model = get_peft_model(model, LoraConfig(target_modules=targets, **lora_kwargs))
        if not cfg.freeze_vision and not cfg.lora_vision:
            for name, p in model.named_parameters():
                if param_group(name, family) == "vision":
                    p.requires_grad_(True)
    if gc:
        enable_input_grads(model, family)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter is trainable: check finetune / freeze_* / lora settings")
    return model


def trainable_summary(model: torch.nn.Module, family: Family) -> dict[str, int]:
    """Trainable parameter counts per group (and ``total``)."""
    counts = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts[param_group(name, family)] += p.numel()
    counts["total"] = sum(counts.values())
    counts["all_params"] = sum(p.numel() for p in model.parameters())
    return counts
