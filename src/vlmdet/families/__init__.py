"""Family registry: ``get_family(name)`` and ``family_for_model(config)``.

Adding a family = one module that defines ``FAMILY`` plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlmdet.families.base import Family, TinySpec

_MODULES = {
    "qwen2_5_vl": "vlmdet.families.qwen2_5_vl",
    "qwen3_vl": "vlmdet.families.qwen3_vl",
    "smolvlm": "vlmdet.families.smolvlm",
    "paligemma": "vlmdet.families.paligemma",
    "florence2": "vlmdet.families.florence2",
    "qwen2_vl": "vlmdet.families.qwen2_vl",
    "internvl": "vlmdet.families.internvl",
    "gemma3": "vlmdet.families.gemma3",
}

__all__ = ["Family", "TinySpec", "FAMILIES", "get_family", "family_for_model"]

FAMILIES = tuple(_MODULES)


def get_family(name: str) -> Family:
    """Return the :class:`Family` registered as ``name`` (e.g. ``"qwen2_5_vl"``)."""
    if name not in _MODULES:
        raise ValueError(f"unknown model family {name!r}; known families: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).FAMILY


def family_for_model(config: Any) -> Family:
    """Pick the family of a transformers config (or a ``model_type`` string)."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    for name in _MODULES:
        fam = get_family(name)
        if model_type in fam.model_types:
            return fam
    raise ValueError(
        f"no vlmdet family handles model_type {model_type!r}; pass --family explicitly "
        f"(one of {', '.join(_MODULES)}) or add a family module"
    )
