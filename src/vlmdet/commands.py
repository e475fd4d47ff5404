"""One Python call per command: what ``vlmdet train|rl|eval|export|doctor`` run, from a notebook or a script.

    import vlmdet

    result = vlmdet.train("my.yaml", learning_rate=1e-4, lora={"r": 8})   # a config file and/or settings
    result.after["map50"], result.baselines, result.report                # metrics, baselines, report.html
    result                                                                # in Jupyter: the table and images

    scores = vlmdet.evaluate(result.output_dir, "data/coco", split="val")
    vlmdet.export(result.output_dir, "exports/detector")
    checks = vlmdet.doctor("my.yaml")

The settings are the config's (the same names as the YAML and as ``key=value`` on the command line,
checked by the same code, with the same messages): a keyword that is a section (``lora``, ``sft``,
``synth``, ``eval`` ...) given a dict updates that section key by key. Errors are exceptions —
:class:`vlmdet.config.ConfigError` and :class:`vlmdet.DataError` (both ``ValueError``),
``FileNotFoundError``, ``RuntimeError`` — whose message is the line the CLI prints after
``vlmdet <command>: error:``. Nothing here calls ``sys.exit``.

Ctrl-C (or "interrupt kernel") during :func:`train` / :func:`rl` raises :class:`Interrupted`, a
``KeyboardInterrupt`` that names the last checkpoint and the call that resumes from it; the run
folder holds only complete checkpoints, and the kernel stays usable.

The CLI (:mod:`vlmdet.cli`) calls these functions: one code path.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DoctorResult", "EvalResult", "ExportResult", "Interrupted", "doctor", "evaluate", "export", "rl", "train"]


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C / "interrupt kernel". ``checkpoint`` is the last complete
    checkpoint (``None`` before the first); the message says how to resume."""

    def __init__(self, command: str, checkpoint: Path | None, output_dir: Path, resume: str):
        self.command, self.checkpoint, self.output_dir = command, checkpoint, output_dir
        super().__init__(self.line(resume))

    def line(self, resume: str) -> str:
        """The one line that says where the run stopped; ``resume`` is the call (or command) that continues it."""
        if self.checkpoint is None:
            return f"vlmdet {self.command}: interrupted before the first checkpoint; nothing saved in {self.output_dir} to resume from"
        return f"vlmdet {self.command}: interrupted; last checkpoint {self.checkpoint} — resume with: {resume}"


def _interrupted(cfg: Any, command: str, config: str | Path | None, overrides: Sequence[str] | None, settings: dict[str, Any]) -> Interrupted:
    from vlmdet.run import RunFolder

    kept = [o for o in overrides or [] if o not in ("--resume", "--overwrite", "resume=true", "overwrite=true")]
    args = ([repr(str(config))] if config is not None else []) + ([f"overrides={kept!r}"] if kept else [])
    args += [f"{k}={v!r}" for k, v in settings.items() if k not in ("resume", "overwrite")]
    out = Path(cfg.output_dir)
    return Interrupted(command, RunFolder(out).last_checkpoint(), out, f"vlmdet.{command}({', '.join(args + ['resume=True'])})")


def _report_verdicts(result: Any, before_name: str) -> None:
    """The warnings the CLI prints after training: not better than the start, not better than a box that ignores the image."""
    from vlmdet.distributed import is_main_process

    if not is_main_process():
        return
    if result.after and result.before and result.after.get("map50", 0) <= result.before.get("map50", 0):
        print(f"[vlmdet] WARNING: {result.subject} is not better than {before_name} on mAP50", file=sys.stderr)
    line = result.verdict()
    if line and "does not beat" in line:
        print(f"[vlmdet] WARNING: {line}", file=sys.stderr)
    elif line:
        print(f"[vlmdet] {line}", flush=True)


def _config(kind: str, config: str | Path | None, overrides: Sequence[str] | None, settings: dict[str, Any]):
    if kind == "rl":
        from vlmdet.train.rl_config import load_config
    else:
        from vlmdet.train.config import load_config
    return load_config(None if config is None else str(config), list(overrides or []), **settings)


def train(config: str | Path | None = None, /, *, overrides: Sequence[str] | None = None, callbacks: Sequence[Any] | None = None, **settings: Any):
    """``vlmdet train``: fine-tune with TRL's SFTTrainer and score before/after against the baselines.

    ``config`` is a YAML file or ``"demo"``; no config and no settings runs the offline demo.
    ``overrides`` are command-line ``key=value`` strings; ``settings`` are Python values
    (``learning_rate=1e-4``, ``lora={"r": 8}``, ``resume=True``, ``overwrite=True``); ``callbacks``
    are ``transformers.TrainerCallback`` objects added to the trainer.
    Returns a :class:`vlmdet.train.recipe.TrainResult`."""
    if config is None and not overrides and not settings:
        config = "demo"
        print("[vlmdet] no settings: running the offline demo (--config demo)", flush=True)
    cfg = _config("sft", config, overrides, settings)  # a settings error comes before torch and transformers load
    from vlmdet.train.recipe import train as run_train
    try:
        result = run_train(cfg, extra_callbacks=list(callbacks or []))
    except KeyboardInterrupt:
        raise _interrupted(cfg, "train", config, overrides, settings) from None
    _report_verdicts(result, "the base")
    return result


def rl(config: str | Path | None = None, /, *, overrides: Sequence[str] | None = None, callbacks: Sequence[Any] | None = None, **settings: Any):
    """``vlmdet rl``: GRPO with box rewards from a trained checkpoint (``model=...``); the settings as
    for :func:`train`, under ``grpo`` for the trainer. Returns a ``TrainResult``."""
    if config is None and not overrides and not settings:
        raise ValueError("vlmdet.rl needs a config or settings (the RL demo runs from the command line: vlmdet rl)")
    cfg = _config("rl", config, overrides, settings)  # a settings error comes before torch and transformers load
    from vlmdet.train.rl import rl as run_rl
    try:
        result = run_rl(cfg, extra_callbacks=list(callbacks or []))
    except KeyboardInterrupt:
        raise _interrupted(cfg, "rl", config, overrides, settings) from None
    _report_verdicts(result, "the starting checkpoint")
    return result


@dataclass
class EvalResult:
    """``vlmdet eval``'s result: ``metrics`` is ``metrics.json`` (per model, plus ``baselines`` and
    ``verdicts``), ``evals`` the per-dataset :class:`vlmdet.evaluate.ModelEval` list (predictions
    included), ``report`` the ``report.html`` written."""

    output_dir: Path
    metrics: dict[str, Any]
    evals: dict[str, list[Any]] = field(repr=False)

    @property
    def report(self) -> Path | None:
        p = self.output_dir / "report.html"
        return p if p.is_file() else None

    def map50(self, model: int = 0, dataset: str | None = None) -> float:
        """mAP50 of the ``model``-th model (0: the one evaluated, 1: ``compare``) on ``dataset`` (the first by default)."""
        name = dataset or next(iter(self.evals))
        return self.evals[name][model].result.map50

    def _repr_html_(self) -> str:
        from vlmdet.report.html import fragment

        parts = []
        for name, evals in self.evals.items():
            folder = self.output_dir if len(self.evals) == 1 else self.output_dir / name
            metrics = self.metrics if len(self.evals) == 1 else json.loads((folder / "metrics.json").read_text())
            columns = {e.name: e.result.to_dict() for e in evals}
            columns.update((metrics.get("baselines") or {}).get("results") or {})
            parts.append(fragment(f"vlmdet eval: {name}", columns, images=sorted((folder / "images").glob("*.png")), notes=metrics.get("verdicts", [])))
        return "\n".join(parts)


def evaluate(model: str | Path | None, data: str | Path | Sequence[str | Path], *, split: str = "val", out: str | Path = "runs/eval",
             batch_size: int = 8, compare: str | Path | None = None, max_samples: int | None = None, family: str | None = None,
             max_new_tokens: int | None = None, on_bad_data: str = "raise", generation: dict[str, Any] | None = None,
             confidence: str = "geometric_mean", allow_overlap: bool = False, endpoint: Any = None) -> EvalResult:
    """``vlmdet eval``: score ``model`` (a run folder, an export or a hub id) on ``data`` (one spec or
    several) with the image-blind baselines beside it; writes metrics.json, report.md/html, images/ to ``out``.

    ``endpoint``: score a served model instead (an :class:`~vlmdet.predict.endpoint.EndpointSpec`, or
    its URL with ``served_model`` in a dict: ``{"url": ..., "served_model": ...}``); ``model`` is then
    the exported folder it serves (or ``None``)."""
    from vlmdet.evaluate import run_eval
    from vlmdet.predict.endpoint import EndpointSpec

    if isinstance(endpoint, dict):
        endpoint = EndpointSpec(**{"model": None if model is None else str(model), **endpoint})
    specs = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    evals = run_eval(None if model is None else str(model), specs[0] if len(specs) == 1 else specs, split=split, out=out, batch_size=batch_size,
                     compare=None if compare is None else str(compare), max_samples=max_samples, family=family, max_new_tokens=max_new_tokens,
                     on_bad_data=on_bad_data, generation=generation, confidence=confidence, allow_overlap=allow_overlap, endpoint=endpoint)
    out = Path(out)
    metrics_file = out / "metrics.json"
    return EvalResult(out, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}, evals)


@dataclass
class ExportResult:
    """``vlmdet export``'s result: the folder and the files written into it."""

    output_dir: Path
    files: list[str]

    def _repr_html_(self) -> str:
        import html

        return f"<p>vlmdet export -> <code>{html.escape(str(self.output_dir))}</code>: {html.escape(', '.join(self.files))}</p>"


def export(model: str | Path, out: str | Path, *, merge: bool = False, dtype: str = "bfloat16", push_to_hub: str | None = None,
           overwrite: bool = False, generation: dict[str, Any] | None = None) -> ExportResult:
    """``vlmdet export``: a run folder as a standalone model folder (merged LoRA with ``merge=True``)."""
    from vlmdet.export import export_model

    path = Path(export_model(str(model), str(out), merge=merge, dtype=dtype, push_to_hub=push_to_hub, overwrite=overwrite, generation=generation))
    return ExportResult(path, sorted(p.name for p in path.iterdir()))


@dataclass
class DoctorResult:
    """``vlmdet doctor``'s checks (:class:`vlmdet.doctor.checks.CheckResult` each); ``ok`` when all pass."""

    checks: list[Any]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def summary(self) -> str:
        return (f"doctor: {len(self.checks) - len(self.failed)}/{len(self.checks)} checks passed"
                + (f"; FAILED: {', '.join(self.failed)}" if self.failed else ""))

    def __iter__(self):
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{'PASS' if c.ok else '<b>FAIL</b>'}</td><td>{html.escape(c.name)}</td><td style='text-align:left'>{html.escape(c.summary)}"
                       + (f"<br><i>fix:</i> {html.escape(c.fix)}" if not c.ok and c.fix else "") + "</td></tr>" for c in self.checks)
        return f"<p>vlmdet {html.escape(self.summary())}</p><table><tr><th></th><th>check</th><th>result</th></tr>{rows}</table>"


def doctor(config: str | Path | None = None, /, *, rl: bool = False, out: str | Path | None = None, checks: Sequence[str] | None = None,
           overfit_steps: int = 300, overrides: Sequence[str] | None = None, **settings: Any) -> DoctorResult:
    """``vlmdet doctor``: the pre-flight checks of a training config (the demo's without a config)."""
    from vlmdet.doctor import run_doctor

    cfg = _config("rl" if rl else "sft", config if config is not None or overrides or settings else "demo", overrides, settings)
    return DoctorResult(run_doctor(cfg, out_dir=out, checks=list(checks) if checks else None, overfit_steps=overfit_steps))
