"""Load a model for inference: a trained vlmdet folder, a PEFT adapter folder, a base model or hub id.

A folder written by ``vlmdet train`` holds the model (or LoRA adapter), the processor and
``vlmdet.json`` (family, codec settings, task, classes), so nothing needs repeating. A plain model
(the base, or a hub id) gets its settings from its config and processor plus what the caller gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmdet.rows import TaskSettings


def load_for_inference(
    model_dir: str | Path,
    family: str | None = None,
    classes: list[str] | None = None,
    task: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any, TaskSettings]:
    """``(model, processor, settings)`` ready for :class:`~vlmdet.predict.Predictor`."""
    from vlmdet.models.loading import check_model_source, load_model

    src = check_model_source(model_dir)
    settings = TaskSettings.load(src) if Path(src).is_dir() else None
    model, processor, fam = load_model(src, family or (settings.family if settings else None))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    if settings is None:
        settings = TaskSettings.for_model(fam.name, processor, task=task or "detect", classes=list(classes or []))
    else:
        if classes:
            settings.classes = list(classes)
        if task:
            settings.task = task
    return model, processor, settings
