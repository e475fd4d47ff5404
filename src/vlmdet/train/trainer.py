"""``SFTTrainer`` with two additions: separate learning rates for vision / projector / language /
adapters, and callback figures (per-group gradient norms) merged into the training log entry.

Everything else (loss, collator contract, PEFT handling, checkpoints, resume) is TRL's. Encoder-
decoder families (Florence-2) do not fit TRL's causal prompt/completion path; they train with
``DetectionSeq2SeqTrainer``: the same two additions on ``transformers.Trainer``, whose loss is the
model's own (decoder cross-entropy over the ``labels``).
"""

from __future__ import annotations

import time
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The VLM classes say they take no loss kwargs (accepts_loss_kwargs=False), so the Trainer never
        # counts the trained tokens of the whole step and TRL's loss falls back to each process's own
        # mean: N processes x batch B then train on a mean of means, not on what 1 x N*B trains on
        # (0.3% apart after 4 steps on the tiny model). TRL computes the loss itself from per-token
        # log-probabilities and divides by that count when it is given, so let the Trainer give it.
        self.model_accepts_loss_kwargs = True


class DetectionSeq2SeqTrainer(_GroupLRMixin, Trainer):
    """``transformers.Trainer`` with per-group learning rates and gradient norms (encoder-decoders)."""


def _grpo_base():
    from trl import GRPOTrainer

    return GRPOTrainer


class DetectionGRPOTrainer(_GroupLRMixin, _grpo_base()):
    """TRL's ``GRPOTrainer`` with per-group learning rates and gradient norms in the log, plus:

    * ``answer_layout="prefix_suffix"`` (PaliGemma): TRL extends ``token_type_ids`` with zeros over
      the completion when it scores it, i.e. marks the answer as *prefix* — bidirectional attention,
      each answer token seeing the ones after it. The answer is given type 1 here, causal, exactly as
      in vlmdet's SFT collator and in generation;
    * where the time goes: seconds in generation, in scoring the rewards and in the update, per log
      entry (``time/generation_s``, ``time/rewards_s``, ``time/update_s``, ``rollouts_per_s``).
    """

    def __init__(self, *args: Any, answer_layout: str = "chat", **kwargs: Any) -> None:
        self.answer_layout = answer_layout
        self._times = dict.fromkeys(("generation", "rewards", "step", "steps", "rollouts"), 0.0)
        super().__init__(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, token_type_ids=None, **kwargs):
        if self.answer_layout == "prefix_suffix" and token_type_ids is not None:
            token_type_ids = token_type_ids.clone()
            token_type_ids[:, -logits_to_keep:] = 1  # the completion: causal, as the model generated it
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, token_type_ids=token_type_ids, **kwargs)

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        t0 = time.perf_counter()
        out = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        self._times["generation"] += time.perf_counter() - t0
        self._times["rollouts"] += len(out[0])  # completions written
        return out

    def _calculate_rewards(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = super()._calculate_rewards(*args, **kwargs)
        self._times["rewards"] += time.perf_counter() - t0
        return out

    def training_step(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = super().training_step(*args, **kwargs)
        self._times["step"] += time.perf_counter() - t0
        self._times["steps"] += 1
        return out

    def timing_logs(self) -> dict[str, float]:
        """Seconds per training step since the last call, split into generation / rewards / update."""
        t = self._times
        if not t["steps"]:
            return {}
        n = t["steps"]
        logs = {
            "time/generation_s": t["generation"] / n,
            "time/rewards_s": t["rewards"] / n,
            "time/update_s": max(0.0, t["step"] - t["generation"] - t["rewards"]) / n,
            "time/step_s": t["step"] / n,
            "rollouts_per_s": t["rollouts"] / t["step"] if t["step"] else 0.0,
        }
        self._times = dict.fromkeys(t, 0.0)
        return logs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.timing_logs())
        super().log(logs, start_time)
