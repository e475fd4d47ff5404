"""``vlmdet rl`` (GRPO with detection rewards) configuration: :class:`RLConfig`.

The shared settings (model, data, task, LoRA, evaluation, decoding) are :class:`vlmdet.config.RunConfig`'s;
``grpo:`` holds any ``trl.GRPOConfig`` field (a bare key works too: ``num_generations=8``) and
``rewards:`` the weight of each reward part (:mod:`vlmdet.rewards`). ``model`` is the starting
checkpoint — typically the output folder of ``vlmdet train`` (a full model or a LoRA adapter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vlmdet.config import ConfigError, RunConfig
from vlmdet.config import load_config as _load_config

RL_DEMO_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "rl_demo.yaml")

# vlmdet's defaults for GRPOConfig, and why they differ from TRL's.
GRPO_DEFAULTS: dict[str, Any] = {
    "num_generations": 8,  # a group of 8 answers per image: enough spread for a group-relative advantage
    "per_device_train_batch_size": 16,  # completions per step: 2 images x 8 answers
    "learning_rate": 1e-5,  # TRL's 1e-6 is for 7B chat models; a detection fine-tune moves further
    "beta": 0.0,  # no reference model (TRL's default too): half the memory, and the rewards are verifiable
    "temperature": 1.0,
    "gradient_checkpointing": True,
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "remove_unused_columns": False,  # the rewards read the sample_index column
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "max_steps": 200,
    "lr_scheduler_type": "constant",
    "disable_tqdm": False,
}


@dataclass
class RLConfig(RunConfig):
    """Settings of one ``vlmdet rl`` run: :class:`~vlmdet.config.RunConfig` plus GRPO's and the rewards'."""

    trainer_section: ClassVar[str] = "grpo"
    demo_config: ClassVar[str] = RL_DEMO_CONFIG

    output_dir: str = "runs/rl"
    finetune: str = "full"  # starting from a fine-tuned checkpoint; lora adds fresh adapters on it
    rewards: dict[str, float] = field(default_factory=dict)  # weights of f1, soft_iou, format, duplicates, count
    grpo: dict[str, Any] = field(default_factory=dict)
    # The honest baseline (the demo sets it): the starting SFT run continued for the same wall time
    # as GRPO took, from this SFT config, scored beside SFT and SFT+GRPO.
    compare_sft_config: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from vlmdet.rewards import PARTS

        unknown = set(self.rewards) - set(PARTS)
        if unknown:
            raise ConfigError(f"rewards: unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")

    @classmethod
    def trainer_args_class(cls) -> type:
        from trl import GRPOConfig

        return GRPOConfig

    def build_trainer_args(self, out: Path, has_eval: bool, seq2seq: bool = False, **extra: Any):
        """TRL ``GRPOConfig`` from vlmdet's defaults, ``grpo:`` and ``extra`` (values the run derives,
        e.g. the answer budget and the reward weights). vlmdet scores detection itself, so the
        Trainer's own evaluation loop stays off."""
        from vlmdet.train.config import build_args

        if self.grpo.get("use_vllm"):
            problem = vllm_unavailable()
            if problem:
                raise ConfigError(f"grpo.use_vllm=true: {problem}. Leave use_vllm off: rollouts are then generated with transformers")
        return build_args(self.trainer_args_class(), {**GRPO_DEFAULTS, **extra}, self.grpo, "grpo", out, self.seed, has_eval=False)


def vllm_unavailable() -> str | None:
    """Why TRL's vLLM generation cannot run here (``None`` when it can): it needs a CUDA GPU and ``vllm``."""
    import importlib.util

    import torch

    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()), ("the vllm package", importlib.util.find_spec("vllm") is not None)) if not ok]
    return f"vLLM generation needs {' and '.join(missing)}, which this machine lacks" if missing else None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **settings: Any) -> RLConfig:
    """Read ``path`` (YAML, or ``"demo"``) and apply ``overrides`` and keyword ``settings`` (see :func:`vlmdet.config.load_config`)."""
    return _load_config(path, overrides, RLConfig, settings)
