"""TRL/transformers ``TrainerCallback``s: gradient flow, detection metrics, concise console lines.

Each works with any ``transformers.Trainer`` (TRL's ``SFTTrainer`` included). Like TRL's own
callbacks, they take the trainer (``trainer=`` or :meth:`attach`) to log through ``trainer.log``,
so their figures reach ``log_history`` and every ``report_to`` backend (tensorboard, wandb...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from vlmdet.families import Family
from vlmdet.train.model import GROUPS, param_group

LIKELY_CAUSES = {
    "none": (
        "these trainable parameters never received a gradient: they are not on the path from the loss "
        "(a module the forward skips, or a frozen input under *reentrant* gradient checkpointing). Fix: "
        "gradient_checkpointing_kwargs={'use_reentrant': False} (vlmdet's default) or call "
        "model.enable_input_require_grads(); check that LoRA targets modules the forward uses."
    ),
    "zero": (
        "gradients are exactly zero: the loss does not depend on these parameters. Typical causes: every "
        "label is -100 (collator masks the target — run `vlmdet doctor`), a frozen block between them and "
        "the loss under reentrant checkpointing, or LoRA B still zero with lora_dropout=1."
    ),
    "nonfinite": (
        "gradients are NaN/inf: fp16 overflow or a learning rate too high. Fix: bf16 instead of fp16, a lower "
        "learning_rate, or max_grad_norm=1.0."
    ),
}


class GradNormCallback(TrainerCallback):
    """Per-group gradient norms (vision, projector, language, adapters) in the logs, and a loud
    warning — optionally stopping the run — when a trainable group gets zero, missing or non-finite
    gradients for ``patience`` optimizer steps in a row.

    Norms are measured just before ``optimizer.step`` (after clipping, which scales all groups alike)
    and logged as ``grad_norm/<group>``, averaged over the steps since the previous log.
    """

    def __init__(self, family: Family, patience: int = 3, stop_on_failure: bool = False, warn: Callable[[str], None] | None = None) -> None:
        self.family, self.patience, self.stop_on_failure = family, max(1, patience), stop_on_failure
        self.warn = warn or (lambda msg: print(f"\n[vlmdet] WARNING: {msg}\n", flush=True))
        self._sums = dict.fromkeys(GROUPS, 0.0)
        self._count = 0
        self._streak: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.problems: list[str] = []
        self._warned: set[str] = set()

    def measure(self, model: torch.nn.Module) -> tuple[dict[str, float], dict[str, list[str]]]:
        """``(norm per group, {"none"|"zero"|"nonfinite": [param names]})`` of the current gradients.

        Also sets ``self.unit_norms``: the same per alarm unit (:meth:`unit`), so that adapters cut off
        in one tower are seen even while the adapters of another tower learn.

        The norms are those of the full gradient under any process count: under DDP every process
        holds the whole (all-reduced) gradient; under FSDP each holds a shard (a DTensor), so the
        squared sums of the local shards are summed over the processes."""
        from torch.distributed.tensor import DTensor

        sq = dict.fromkeys(GROUPS, 0.0)
        units: dict[str, float] = {}
        bad: dict[str, list[str]] = {"none": [], "zero": [], "nonfinite": []}
        sharded: list[tuple[str, str, str, torch.Tensor]] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            group, unit = param_group(name, self.family), self.unit(name)
            units.setdefault(unit, 0.0)
            if p.grad is None:
                bad["none"].append(name)
                continue
            if isinstance(p.grad, DTensor):
                sharded.append((name, group, unit, p.grad.to_local().detach().float().pow(2).sum()))
                continue
            g = p.grad.detach().float()
            n2 = float(g.pow(2).sum())
            if not math.isfinite(n2):
                bad["nonfinite"].append(name)
                sq[group] = units[unit] = float("nan")
            else:
                sq[group] += n2
                units[unit] += n2
                if n2 == 0.0:
                    bad["zero"].append(name)
        if sharded:
            import torch.distributed as dist

            local = torch.stack([s for *_, s in sharded])
            if dist.is_initialized():
                dist.all_reduce(local)  # sum of the shards' squared sums = the full gradient's
            for (name, group, unit, _), n2 in zip(sharded, local.tolist()):
                if not math.isfinite(n2):
                    bad["nonfinite"].append(name)
                    sq[group] = units[unit] = float("nan")
                else:
                    sq[group] += n2
                    units[unit] += n2
                    if n2 == 0.0:
                        bad["zero"].append(name)
        self.unit_norms = {u: math.sqrt(v) if v == v else float("nan") for u, v in units.items()}
        return {g: math.sqrt(v) if v == v else float("nan") for g, v in sq.items()}, bad

    def unit(self, name: str) -> str:
        """What the alarm watches: a parameter group, with LoRA adapters split by the tower they sit in
        (``adapters (vision)`` can get no gradient while ``adapters (language)`` learns)."""
        group = param_group(name, self.family)
        return group if group != "adapters" else f"adapters ({param_group(name.replace('lora_', ''), self.family)})"

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        norms, bad = self.measure(model)
        self.last = norms
        for g, v in norms.items():
            self._sums[g] += v if math.isfinite(v) else 0.0
        self._count += 1
        # a *unit* failing is the signal; single zero rows (e.g. unused embeddings) are normal
        for group, v in self.unit_norms.items():
            kind = "nonfinite" if not math.isfinite(v) else ("zero" if v == 0.0 else None)
            if kind is None:
                self._streak.pop(group, None)
                continue
            self._streak[group] = self._streak.get(group, 0) + 1
            if self._streak[group] >= self.patience and (group, kind) not in self._warned:
                names = [n for n in bad["none"] + bad[kind] if self.unit(n) == group]
                cause = LIKELY_CAUSES["none" if bad["none"] and kind == "zero" else kind]
                msg = (
                    f"step {state.global_step}: trainable group '{group}' had {kind} gradients for "
                    f"{self._streak[group]} steps ({len(names)} parameters, e.g. {', '.join(names[:3])}). Likely cause: {cause}"
                )
                self.problems.append(msg)
                self._warned.add((group, kind))
                if state.is_world_process_zero:
                    self.warn(msg)
                if self.stop_on_failure:
                    control.should_training_stop = True
        return control

    def pop_logs(self) -> dict[str, float]:
        """Mean per-group norms since the last call (``{}`` if no step ran)."""
        if not self._count:
            return {}
        metrics = {f"grad_norm/{g}": self._sums[g] / self._count for g in GROUPS}
        self._sums = dict.fromkeys(GROUPS, 0.0)
        self._count = 0
        return metrics

    def on_log(self, args, state, control, logs=None, **kwargs):
        # vlmdet's trainer merges pop_logs() into its training log entry; with any other trainer,
        # add the norms to the entry here (seen by later callbacks and in log_history).
        if logs is None or "loss" not in logs or not self._count:
            return
        metrics = self.pop_logs()
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)


class DetectionEvalCallback(TrainerCallback):
    """At every evaluation: batched greedy generation on a fixed eval subset -> decode -> mAP50,
    mAP50-95, mean IoU, parse-failure rate (logged as ``eval_map50`` etc.).

    Args:
        samples: the fixed eval subset (vlmdet Samples).
        settings: the run's :class:`~vlmdet.rows.TaskSettings` (same prompts as training).
        processor: the model's processor (else taken from the trainer's ``processing_class``).
        images: optional ``{sample.id: PIL image}`` cache.
    """

    def __init__(self, samples: Sequence[Any], settings: Any, processor: Any = None, batch_size: int = 16, images: dict[str, Any] | None = None,
                 trainer: Any = None, decoding: Any = None, confidence: str = "geometric_mean", every: int | None = None) -> None:
        self.samples, self.settings, self.processor = list(samples), settings, processor
        self.batch_size, self.images, self.trainer = batch_size, images, trainer
        self.decoding, self.confidence, self.every = decoding, confidence, every
        self.history: list[dict[str, float]] = []
        self._t0: float | None = None

    def attach(self, trainer: Any) -> "DetectionEvalCallback":
        self.trainer = trainer
        return self

    def evaluate(self, model: torch.nn.Module, processor: Any) -> dict[str, float]:
        from vlmdet.predict import Predictor, evaluate_predictions

        t0 = time.perf_counter()
        preds = Predictor(model, processor, self.settings, batch_size=self.batch_size, decoding=self.decoding, confidence=self.confidence).predict(self.samples, images=self.images)
        r = evaluate_predictions(self.samples, preds, self.settings, self.confidence)
        out = {
            "eval_map50": r.map50,
            "eval_map": r.map,
            "eval_f1_50": r.f1_50,
            "eval_mean_iou": r.mean_iou,
            "eval_duplicate_rate": r.duplicate_rate,
            "eval_parse_failure_rate": r.parse_failure_rate,
            "eval_preds_per_image": r.preds_per_image,
            "eval_detection_seconds": time.perf_counter() - t0,
        }
        if self.confidence in r.by_score:
            out["eval_map50_by_confidence"] = r.by_score[self.confidence]["map50"]
        return out

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        # Trainers that run no evaluation loop of their own (GRPO): every ``every`` steps, and at the end.
        # The entry goes straight to log_history: a trainer's log() may fold its pending training
        # metrics into whatever is logged (TRL's GRPOTrainer does), which would steal the step's entry.
        if self.every and (state.global_step % self.every == 0 or state.global_step == state.max_steps):
            det = self._score(state, model, processing_class)
            if det:
                state.log_history.append({**det, "step": state.global_step})
                if state.is_world_process_zero:
                    print(f"[vlmdet] step {state.global_step:>5} | " + " | ".join(f"{k[5:]} {v:.3f}" for k, v in det.items() if k in ("eval_map50", "eval_f1_50", "eval_mean_iou")), flush=True)

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        det = self._score(state, model, processing_class)
        if not det:
            return
        if metrics is not None:
            metrics.update(det)
        if self.trainer is not None:
            self.trainer.log(det)
        else:
            state.log_history.append({**det, "step": state.global_step})

    def _score(self, state, model, processing_class) -> dict[str, float] | None:
        processor = self.processor or processing_class
        if model is None or processor is None or not self.samples:
            return None
        elapsed = time.perf_counter() - self._t0 if self._t0 is not None else float("nan")
        det = self.evaluate(model, processor)
        det["eval_wall_seconds"] = elapsed  # since train start, before this evaluation
        self.history.append({"step": state.global_step, **det})
        return det


class ConsoleCallback(TrainerCallback):
    """One concise line per log beside the progress bar: step, loss, lr, grad norms, eval figures."""

    KEYS = (
        ("loss", "loss {:.4f}"),
        ("learning_rate", "lr {:.2e}"),
        ("grad_norm", "|g| {:.3g}"),
        ("mean_token_accuracy", "tok-acc {:.3f}"),
        ("eval_loss", "eval_loss {:.4f}"),
        ("eval_map50", "mAP50 {:.3f}"),
        ("eval_f1_50", "F1@.5 {:.3f}"),
        ("eval_map", "mAP {:.3f}"),
        ("eval_mean_iou", "IoU {:.3f}"),
        ("eval_parse_failure_rate", "parse-fail {:.0%}"),
    )

    def __init__(self, printer: Callable[[str], None] | None = None) -> None:
        self._t0 = time.perf_counter()
        if printer is None:
            from tqdm.auto import tqdm

            printer = tqdm.write
        self.printer = printer

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        parts = [fmt.format(logs[k]) for k, fmt in self.KEYS if isinstance(logs.get(k), (int, float))]
        groups = [f"{k[10:]} {v:.2g}" for k, v in sorted(logs.items()) if k.startswith("grad_norm/") and v]
        if groups:
            parts.append("|g| by group: " + ", ".join(groups))
        if parts:
            self.printer(f"[vlmdet] step {state.global_step:>5} | {time.perf_counter() - self._t0:6.0f}s | " + " | ".join(parts))


class TimeLimitCallback(TrainerCallback):
    """Stops training once ``seconds`` of it have passed (``max_seconds``); the Trainer then saves and
    vlmdet reports as after any last step. For comparisons at equal wall time."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self._t0 = float(seconds), None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None and time.perf_counter() - self._t0 >= self.seconds:
            control.should_training_stop = True
            control.should_save = True
        return control


def quiet_progress(trainer: Any) -> None:
    """Keep the Trainer's progress bar but drop its raw ``{'loss': ...}`` dict lines (ConsoleCallback prints them)."""
    from transformers.trainer_callback import ProgressCallback

    class _Quiet(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_Quiet())
