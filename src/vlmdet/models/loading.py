"""Loading a model and its processor: a local folder, a PEFT adapter folder, or a hub id.

Every command stands on this module (train, rl, eval, predict, doctor, export), so a model folder
means the same thing everywhere:

* a full model folder or a hub id loads through ``Auto*.from_pretrained`` — the same path a hub
  checkpoint takes;
* a PEFT adapter folder (``adapter_config.json``, e.g. a LoRA ``vlmdet train`` output) loads its
  base model, then the adapter on top (transformers' PEFT integration, ``load_adapter``). The base
  path is resolved here, not by the current directory: an absolute path as recorded, or a path
  relative to the adapter folder, or a hub id — so a run folder evaluates from any directory;
* the processor comes from the folder when it has one, else from the base model (a bare adapter
  folder holds only the adapter).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vlmdet.families import Family, family_for_model, get_family

ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


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


def _looks_like_path(src: str) -> bool:
    return src.startswith(("/", ".", "~")) or src.count("/") > 1 or "\\" in src


def check_model_source(model_id: str | Path) -> str:
    """``model_id`` as a string — an *absolute* path for a local folder — or a clear error when it
    is neither a folder nor a usable hub id.

    A hub id is ``name`` or ``org/name``; anything that looks like a path (absolute, ``./``,
    ``~``, or more than one ``/``) must exist. Offline, a hub id must already be in the cache —
    transformers says so itself, this only catches the common typo early with the fix. Local
    folders become absolute so that what a model records about its origin (``_name_or_path``, a
    PEFT adapter's ``base_model_name_or_path``) does not depend on the current directory.
    """
    src = str(model_id)
    local = Path(src).expanduser()
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"model {src} is a file, not a model folder; give the folder that holds config.json")
        return str(local.resolve())
    if _looks_like_path(src):
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


def adapter_base(src: str) -> str | None:
    """The base model of the PEFT adapter folder ``src`` (``None`` if ``src`` is no adapter folder).

    ``base_model_name_or_path`` is tried as recorded (absolute path or hub id), then relative to the
    adapter folder, then as a folder of the same name inside the adapter folder (a run folder moved
    with its ``base-*`` model inside), then relative to the current directory (what PEFT does).
    """
    cfg_path = Path(src) / ADAPTER_CONFIG
    if not cfg_path.is_file():
        return None
    try:
        base = json.loads(cfg_path.read_text())["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{cfg_path}: not a PEFT adapter config ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(base, str) or not base:
        raise ValueError(f"{cfg_path}: base_model_name_or_path is empty; set it to the base model folder or hub id")
    for candidate in (Path(base).expanduser(), Path(src) / base, Path(src) / Path(base).name, Path.cwd() / base):
        if candidate.is_absolute() and candidate.is_dir():
            return str(candidate.resolve())
    if Path(base).is_absolute() or _looks_like_path(base):
        raise FileNotFoundError(
            f"{src} is a LoRA adapter for the base model {base}, which does not exist here (tried it as given, relative to "
            f"the adapter folder and to the current directory). Put the base model there, or set base_model_name_or_path "
            f"in {cfg_path} to its folder or hub id"
        )
    return check_model_source(base)


def family_of(src: str) -> Family:
    """The family of a model folder / hub id, read from its config (an adapter's: its base's)."""
    from transformers import AutoConfig

    return family_for_model(AutoConfig.from_pretrained(adapter_base(src) or src))


def has_processor(src: str) -> bool:
    return any((Path(src) / name).is_file() for name in PROCESSOR_FILES)


def load_processor(model_id: str | Path, family: str | None = None, max_pixels: int | None = None) -> tuple[Any, Family]:
    """``(processor, family)`` without loading weights (the folder's processor, else its base model's)."""
    from transformers import AutoProcessor

    src = check_model_source(model_id)
    base = adapter_base(src)
    processor = AutoProcessor.from_pretrained(src if base is None or has_processor(src) else base)
    if max_pixels:
        set_max_pixels(processor, max_pixels)
    return processor, get_family(family) if family else family_of(src)


def load_model(
    model_id: str | Path,
    family: str | None = None,
    dtype: torch.dtype | None = None,
    quantize_4bit: bool = False,
    max_pixels: int | None = None,
    merge: bool = False,
    **kwargs: Any,
):
    """``(model, processor, family)`` from a local dir or hub id, through the same ``from_pretrained`` path.

    A PEFT adapter folder loads its base model (see :func:`adapter_base`) with the adapter on top;
    its family is read from the base model's config. With ``merge`` the adapter is merged into the
    base weights (PEFT's ``merge_and_unload``): a plain model, e.g. to train further or export.
    ``max_pixels`` overrides the processor's image budget (see :func:`set_max_pixels`)."""
    import transformers

    src = check_model_source(model_id)
    base = adapter_base(src)
    fam = get_family(family) if family else family_of(src)
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
    auto = getattr(transformers, fam.auto_class)
    if base is None:
        model = auto.from_pretrained(src, **load_kwargs)
    elif merge:
        from peft import PeftModel

        model = PeftModel.from_pretrained(auto.from_pretrained(base, **load_kwargs), src).merge_and_unload()
    else:
        model = auto.from_pretrained(base, **load_kwargs)
        model.load_adapter(src)
    processor, _ = load_processor(src, fam.name, max_pixels)
    return model, processor, fam
