"""``vlmdet train`` (supervised fine-tuning) configuration: :class:`TrainConfig`.

The shared settings (model, data, task, LoRA, evaluation, decoding) are :class:`vlmdet.config.RunConfig`'s;
``sft:`` holds any ``trl.SFTConfig`` / ``transformers.TrainingArguments`` field and ``lora:`` any
``peft.LoraConfig`` field, so nothing needs a code change. See :mod:`vlmdet.config` for the override
syntax and the checks made before anything loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vlmdet.config import ConfigError, EvalConfig, RunConfig, parse_overrides, yaml_value
from vlmdet.config import load_config as _load_config

__all__ = ["DEMO_CONFIG", "SFT_DEFAULTS", "EvalConfig", "TrainConfig", "load_config", "parse_overrides", "yaml_value"]

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
class TrainConfig(RunConfig):
    """Settings of one ``vlmdet train`` run: :class:`~vlmdet.config.RunConfig` plus the SFT trainer's."""

    trainer_section: ClassVar[str] = "sft"
    demo_config: ClassVar[str] = DEMO_CONFIG

    # Deliberately wrong recipes, for ablations and `doctor` tests only (never in real use):
    labels: str = "completion"  # "all": train on prompt and image tokens too
    target_space: str = "model"  # "original": Qwen2.5-VL targets in original-image pixels
    output_dir: str = "runs/train"
    sft: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels not in ("completion", "all"):
            raise ConfigError(f"labels must be completion or all, got {self.labels!r}")
        if self.target_space not in ("model", "original"):
            raise ConfigError(f"target_space must be model or original, got {self.target_space!r}")

    @classmethod
    def trainer_args_class(cls) -> type:
        from trl import SFTConfig

        return SFTConfig

    def build_trainer_args(self, out: Path, has_eval: bool, seq2seq: bool = False):
        """TRL ``SFTConfig`` from vlmdet's defaults and ``sft:`` — or, for an encoder-decoder, a plain
        ``TrainingArguments`` with the same values (SFT-only fields such as ``max_length`` dropped).
        A value the trainer refuses is a :class:`~vlmdet.config.ConfigError` naming the section."""
        return build_args(self.trainer_args_class(), SFT_DEFAULTS, self.sft, "sft", out, self.seed, has_eval, seq2seq)


def build_args(args_cls: type, defaults: dict[str, Any], values: dict[str, Any], section: str, out: Path, seed: int, has_eval: bool, seq2seq: bool = False):
    """A trainer config (``args_cls``) from vlmdet's ``defaults`` and the user's ``values``, set for
    this machine: bf16 only where the GPU has it (TRL defaults bf16=True, which fails on a CPU)."""
    import dataclasses

    import torch
    from transformers import TrainingArguments

    kwargs = {**defaults, **values, "output_dir": str(out), "seed": seed}
    on_gpu = torch.cuda.is_available()
    kwargs.setdefault("bf16", on_gpu and torch.cuda.is_bf16_supported())
    if not on_gpu:
        kwargs["bf16"] = False
        kwargs["fp16"] = False
        kwargs.setdefault("use_cpu", True)
    if not has_eval:
        kwargs["eval_strategy"] = "no"
    if kwargs.get("eval_strategy") == "steps" and kwargs.get("save_strategy") == "steps" and kwargs.get("load_best_model_at_end"):
        kwargs["save_steps"] = kwargs.get("eval_steps", kwargs["save_steps"])
    if seq2seq:
        args_cls = TrainingArguments
        allowed = {f.name for f in dataclasses.fields(TrainingArguments)}
        kwargs = {k: v for k, v in kwargs.items() if k in allowed}
    try:
        return args_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{section}: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **settings: Any) -> TrainConfig:
    """Read ``path`` (YAML, or ``"demo"``) and apply ``overrides`` and keyword ``settings`` (see :func:`vlmdet.config.load_config`)."""
    return _load_config(path, overrides, TrainConfig, settings)
