"""``vlmdet train`` configuration: one YAML file plus ``key=value`` overrides.

Every field of :class:`TrainConfig` is a vlmdet setting; ``sft:`` holds any ``trl.SFTConfig`` /
``transformers.TrainingArguments`` field and ``lora:`` any ``peft.LoraConfig`` field, so nothing
needs a code change. Overrides use dotted keys (``sft.learning_rate=1e-4``, ``lora.r=8``); a bare
key that is not a vlmdet field is routed to ``sft`` or ``lora`` if it belongs there
(``learning_rate=1e-4`` == ``sft.learning_rate=1e-4``). Values are parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: ``1e-3`` is a float (YAML 1.1 reads a string) and only true/false are
    booleans (YAML 1.1 turns ``save_strategy: no`` into ``False``, which TrainingArguments rejects)."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"] for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def yaml_value(text: str):
    return yaml.load(text, Loader=_Loader)


DEMO_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")

# vlmdet's defaults for SFTConfig, and why they differ from TRL's.
SFT_DEFAULTS: dict[str, Any] = {
    # TRL truncates at 1024 tokens by default, which can cut image tokens or the target: vlmdet
    # never truncates and bounds length through the processor's max_pixels instead.
    "max_length": None,
    # TRL's chunked loss errors when lm_head is LoRA-wrapped; plain NLL is exact and always works.
    "loss_type": "nll",
    # Non-reentrant checkpointing works with frozen embeddings and LoRA on the vision tower.
    "gradient_checkpointing": True,
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    # Rows hold images and messages: the collator needs them, not just model inputs.
    "remove_unused_columns": False,
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 200,
    "save_total_limit": 2,
    "eval_strategy": "steps",
    "eval_steps": 200,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 20,
    "num_train_epochs": 3,
    "dataloader_num_workers": 0,
    "disable_tqdm": False,
}


@dataclass
class EvalConfig:
    """Detection evaluation during and around training."""

    max_samples: int | None = 200  # fixed subset of the eval split scored at every eval (None = all)
    batch_size: int = 16
    max_new_tokens: int | None = None  # None = from the longest training target
    before: bool = True  # score the base model before the first step (the "before" column)
    after: bool = True  # score the trained model after the last step


@dataclass
class TrainConfig:
    """Settings of one ``vlmdet train`` run (see the module docstring for sft/lora)."""

    model: str = "tiny:qwen2_5_vl"  # local dir, hub id, or tiny:<family> (built offline)
    family: str | None = None  # default: read from the model's config
    data: str = "synth"  # dataset spec (vlmdet.data.readers.open_dataset), or "synth"
    train_split: str = "train"
    eval_split: str = "val"
    task: str = "detect"  # detect | detect_named | ground
    classes: list[str] | None = None  # closed class set; default: the training data's classes
    on_bad_data: str = "raise"  # raise | skip
    max_pixels: int | None = None  # override the processor's image budget (bounds sequence length)
    finetune: str = "lora"  # lora | qlora | full
    freeze_vision: bool | None = None  # default: True for lora/qlora, False for full
    freeze_projector: bool | None = None  # default: True for lora/qlora, False for full
    lora_vision: bool = False  # add LoRA to the vision tower's attention
    lr_vision: float | None = None  # learning rates per group (None = sft.learning_rate)
    lr_projector: float | None = None
    lr_language: float | None = None
    cache_images: bool = True  # keep decoded training images in memory (small datasets)
    # Deliberately wrong recipes, for ablations and `doctor` tests only (never in real use):
    labels: str = "completion"  # "all": train on prompt and image tokens too
    target_space: str = "model"  # "original": Qwen2.5-VL targets in original-image pixels
    grad_check_steps: int = 3  # warn when a trainable group gets zero/non-finite grads this many steps running
    stop_on_bad_grads: bool = False
    output_dir: str = "runs/train"
    resume: bool = False
    seed: int = 0
    synth: dict[str, Any] = field(default_factory=dict)  # SynthConfig fields when data == "synth"
    tiny: dict[str, Any] = field(default_factory=dict)  # TinySpec fields when model == tiny:<family>
    eval: EvalConfig = field(default_factory=EvalConfig)
    sft: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.eval, dict):
            self.eval = EvalConfig(**self.eval)
        if self.finetune not in ("lora", "qlora", "full"):
            raise ValueError(f"finetune must be lora, qlora or full, got {self.finetune!r}")
        if self.labels not in ("completion", "all"):
            raise ValueError(f"labels must be completion or all, got {self.labels!r}")
        if self.target_space not in ("model", "original"):
            raise ValueError(f"target_space must be model or original, got {self.target_space!r}")
        if self.task not in ("detect", "detect_named", "ground"):
            raise ValueError(f"task must be detect, detect_named or ground, got {self.task!r}")
        if self.freeze_vision is None:
            self.freeze_vision = self.finetune != "full"
        if self.freeze_projector is None:
            self.freeze_projector = self.finetune != "full"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sft_fields() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def _lora_fields() -> set[str]:
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "--c", "x", "--flag"]`` -> ``[("a.b", 1), ("c", "x"), ("flag", True)]``."""
    out, i = [], 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            key = item[2:]
            if "=" in key:
                key, raw = key.split("=", 1)
                out.append((key.replace("-", "_"), yaml_value(raw)))
            elif i + 1 < len(items) and not items[i + 1].startswith("--") and "=" not in items[i + 1]:
                key = key.replace("-", "_")
                out.append((key, yaml_value(items[i + 1])))
                i += 1
            else:
                out.append((key.replace("-", "_"), True))
        elif "=" in item:
            key, raw = item.split("=", 1)
            out.append((key.replace("-", "_"), yaml_value(raw)))
        else:
            raise ValueError(f"unexpected argument {item!r}: use key=value or --key value")
        i += 1
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (YAML) and apply ``overrides``; unknown keys are an error that lists the valid ones."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        tree = yaml_value(p.read_text()) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"{p}: a config is a YAML mapping of settings")
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    sft, lora = _sft_fields(), _lora_fields()
    for key, value in parse_overrides(overrides or []):
        head = key.split(".")[0]
        if head in own:
            _set(tree, key, value)
        elif key in sft:
            _set(tree, f"sft.{key}", value)
        elif key in lora:
            _set(tree, f"lora.{key}", value)
        else:
            raise ValueError(f"unknown setting {key!r}: not a vlmdet setting ({', '.join(sorted(own))}), nor an SFTConfig or LoraConfig field")
    unknown = set(tree) - own
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))} in config; valid: {', '.join(sorted(own))}")
    bad_sft = set(tree.get("sft", {})) - sft
    if bad_sft:
        raise ValueError(f"sft: {', '.join(sorted(bad_sft))} are not SFTConfig fields")
    bad_lora = set(tree.get("lora", {})) - lora
    if bad_lora:
        raise ValueError(f"lora: {', '.join(sorted(bad_lora))} are not LoraConfig fields")
    return TrainConfig(**tree)
