"""Loading a model and deciding which parameters train: LoRA, QLoRA, full, frozen towers.

Parameter groups (used for freezing, learning rates and gradient-norm logs) come from the family's
name prefixes: ``vision`` (the vision tower), ``projector`` (vision -> text), ``language`` (the rest)
and ``adapters`` (LoRA weights wherever they sit).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from vlmdet.families import Family, family_for_model, get_family

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


def default_dtype() -> torch.dtype:
    """bf16 where the hardware has it (CUDA), else fp32 (CPU training in fp16/bf16 is slow or unsupported)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s weights (what pixel values must be cast to)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def set_max_pixels(processor: Any, max_pixels: int) -> None:
    """Bound the image budget of a Qwen-VL image processor (its ``size.longest_edge`` is max pixels).

    Other image processors use ``longest_edge`` for a side length in pixels, so the setting would
    mean something else there: that is an error rather than a silent resize.
    """
    ip = processor.image_processor
    if not hasattr(ip, "merge_size"):
        raise ValueError(f"max_pixels sets the pixel budget of Qwen-VL image processors; {type(ip).__name__} has none: leave max_pixels unset")
    ip.size = {**dict(ip.size), "longest_edge": int(max_pixels)}


def load_model(
    model_id: str | Path,
    family: str | None = None,
    dtype: torch.dtype | None = None,
    quantize_4bit: bool = False,
    max_pixels: int | None = None,
    **kwargs: Any,
):
    """``(model, processor, family)`` from a local dir or hub id, through the same ``from_pretrained`` path.

    A PEFT adapter folder (``adapter_config.json``) loads its base model with the adapter on top
    (transformers' PEFT integration); its family is read from the base model's config.
    ``max_pixels`` overrides the processor's image budget (see :func:`set_max_pixels`)."""
    import transformers
    from transformers import AutoProcessor

    src = check_model_source(model_id)
    fam = get_family(family) if family else _family_of(src)
    load_kwargs: dict[str, Any] = {"dtype": dtype or default_dtype(), **kwargs}
    if quantize_4bit:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
                "Use finetune=lora (or full) on CPU."
            )
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
        load_kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = getattr(transformers, fam.auto_class).from_pretrained(src, **load_kwargs)
    processor = AutoProcessor.from_pretrained(src)
    if max_pixels:
        set_max_pixels(processor, max_pixels)
    return model, processor, fam


def _family_of(src: str) -> Family:
    from transformers import AutoConfig

    adapter = Path(src) / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.is_file() else src
    return family_for_model(AutoConfig.from_pretrained(base))


def check_model_source(model_id: str | Path) -> str:
    """``model_id`` as a string, or a clear error when it is neither a folder nor a usable hub id.

    A hub id is ``name`` or ``org/name``; anything that looks like a path (absolute, ``./``,
    ``~``, or more than one ``/``) must exist. Offline, a hub id must already be in the cache —
    transformers says so itself, this only catches the common typo early with the fix.
    """
    src = str(model_id)
    if Path(src).expanduser().exists():
        return str(Path(src).expanduser())
    looks_like_path = src.startswith(("/", ".", "~")) or src.count("/") > 1 or "\\" in src
    if looks_like_path:
        raise FileNotFoundError(
            f"model folder {src} does not exist; give a folder written by `vlmdet train` or "
            "`vlmdet tiny-model`, or a hub id such as Qwen/Qwen2.5-VL-3B-Instruct"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(src, "config.json"), str):
            raise FileNotFoundError(
                f"model {src!r} is not a local folder and not in the hub cache, and HF_HUB_OFFLINE=1; "
                "download it while online or build an offline one with `vlmdet tiny-model`"
            )
    return src


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
    fields), sft (dict; gradient checkpointing settings).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    sft = cfg.sft
    gc = sft.get("gradient_checkpointing", True)
    gc_kwargs = sft.get("gradient_checkpointing_kwargs") or {"use_reentrant": False}
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
