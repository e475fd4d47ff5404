"""Load a model for inference: a trained vlmdet folder, a PEFT adapter folder, a base model or hub id.

A folder written by ``vlmdet train`` holds the model (or LoRA adapter), the processor and
``vlmdet.json`` (family, codec settings, task, classes), so nothing needs repeating. A plain model
(the base, or a hub id) gets its settings from its config and processor plus what the caller gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmdet.rows import TaskSettings


def _family_name(model_dir: str) -> str:
    from transformers import AutoConfig

    from vlmdet.families import family_for_model

    path = Path(model_dir)
    adapter = path / "adapter_config.json"
    src = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.is_file() else model_dir
    return family_for_model(AutoConfig.from_pretrained(src)).name


def load_for_inference(
    model_dir: str | Path,
    family: str | None = None,
    classes: list[str] | None = None,
    task: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any, TaskSettings]:
    """``(model, processor, settings)`` ready for :class:`~vlmdet.predict.Predictor`."""
    import transformers
    from transformers import AutoProcessor

    from vlmdet.families import get_family
    from vlmdet.train.model import check_model_source, default_dtype

    src = check_model_source(model_dir)
    settings = TaskSettings.load(src) if Path(src).is_dir() else None
    fam = get_family(family or (settings.family if settings else _family_name(src)))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = getattr(transformers, fam.auto_class).from_pretrained(src, dtype=default_dtype())
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(src)
    if settings is None:
        settings = TaskSettings.for_model(fam.name, processor, task=task or "detect", classes=list(classes or []))
    else:
        if classes:
            settings.classes = list(classes)
        if task:
            settings.task = task
    return model, processor, settings
