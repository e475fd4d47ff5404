"""Build offline tiny models: real transformers classes, small configs, random weights.

``build_tiny_model("qwen2_5_vl", "tiny/")`` writes a folder that
``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained`` load with
``HF_HUB_OFFLINE=1`` exactly like a hub checkpoint, so tests and the demo go through the same code
path as a real model. The family recipe lives in ``vlmdet/families/<family>.py``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, set_seed

from vlmdet.families import TinySpec, get_family

TINY_INFO_FILE = "vlmdet_tiny.json"
PATCH_SIZE_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # the families whose build reads TinySpec.vision_patch_size


def build_tiny_model(family: str, out_dir: str | Path, spec: TinySpec | None = None, **overrides: Any) -> Path:
    """Write an offline tiny model of ``family`` to ``out_dir`` and return the folder.

    ``overrides`` replace fields of :class:`TinySpec` (e.g. ``hidden_size=256``).
    """
    spec = replace(spec or TinySpec(), **overrides)
    if spec.vision_patch_size is not None and family not in PATCH_SIZE_FAMILIES:
        raise ValueError(f"tiny.vision_patch_size is read by the {', '.join(PATCH_SIZE_FAMILIES)} tiny models only, not {family}'s "
                         "(its patch size is fixed by its processor); remove the setting")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(spec.seed)
    get_family(family).build_tiny(out, spec)
    return out


def save_tiny(model: torch.nn.Module, processor: Any, out: Path, family: str, spec: TinySpec, **generation: Any) -> None:
    """Save model + processor + a generation config + a small info file describing the build."""
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    info = {"family": family, "parameters": n_params, "spec": asdict(spec), "model_class": type(model).__name__}
    (out / TINY_INFO_FILE).write_text(json.dumps(info, indent=2))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
