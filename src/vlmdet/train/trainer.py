"""``SFTTrainer`` with two additions: separate learning rates for vision / projector / language /
adapters, and callback figures (per-group gradient norms) merged into the training log entry.

Everything else (loss, collator contract, PEFT handling, checkpoints, resume) is TRL's. Encoder-
decoder families (Florence-2) do not fit TRL's causal prompt/completion path; they train with
``DetectionSeq2SeqTrainer``: the same two additions on ``transformers.Trainer``, whose loss is the
model's own (decoder cross-entropy over the ``labels``).
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer
from trl import SFTTrainer

from vlmdet.families import Family
from vlmdet.train.model import param_group


class _GroupLRMixin:
    """``Trainer(..., family=F, group_lrs={"vision": 1e-5, "projector": 1e-4})``.

    Groups without an entry use ``args.learning_rate``. Weight decay follows the Trainer's rule
    (none for biases and norms) inside each group.
    """

    def __init__(self, *args: Any, family: Family | None = None, group_lrs: dict[str, float] | None = None, **kwargs: Any) -> None:
        self.family = family
        self.group_lrs = {k: v for k, v in (group_lrs or {}).items() if v is not None}
        super().__init__(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training entries carry the per-group gradient norms of callbacks that measure them.
        if "loss" in logs:
            for cb in self.callback_handler.callbacks:
                if hasattr(cb, "pop_logs"):
                    logs.update(cb.pop_logs())
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        if not self.group_lrs or self.family is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], list] = {}
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault((param_group(name, self.family), name in decay), []).append(p)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if has_decay else 0.0,
                "lr": self.group_lrs.get(group, self.args.learning_rate),
                "name": group,
            }
            for (group, has_decay), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("params", None)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


class DetectionSFTTrainer(_GroupLRMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with per-group learning rates and gradient norms in the log (chat VLMs)."""


class DetectionSeq2SeqTrainer(_GroupLRMixin, Trainer):
    """``transformers.Trainer`` with per-group learning rates and gradient norms (encoder-decoders)."""
