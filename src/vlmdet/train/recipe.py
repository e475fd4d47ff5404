"""``vlmdet train``: the supervised fine-tuning recipe, top to bottom.

1. prepare — :func:`vlmdet.run.prepare_run`: output folder, trainer arguments, data, resume,
             model and task settings, every check made before anything trains
2. model   — choose what trains (LoRA / QLoRA / full, freezes)
3. before  — score the base model on the eval split (same prompts and decoding as "after")
4. train   — TRL SFTTrainer on prompt/completion rows; completion-only labels; callbacks for
             gradient flow, detection metrics and console lines; checkpoints for --resume
5. after   — score the fine-tuned model; save model + processor + vlmdet.json; report.md/json
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmdet.run import BEFORE_FILE, log
from vlmdet.train.config import TrainConfig


@dataclass
class TrainResult:
    """What ``vlmdet train`` / ``vlmdet rl`` (and :func:`vlmdet.train` / :func:`vlmdet.rl`) produced.

    ``before`` / ``after`` are the eval split's metrics (``DetectionResult.to_dict()``: ``map50``,
    ``map``, ...), ``baselines`` the image-blind baselines on the same images, ``log_history`` the
    trainer's logged history (loss, eval figures, gradient norms per step). In Jupyter the object
    shows the before/after/baseline table and a few images with their boxes."""

    output_dir: Path
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    steps: int
    train_seconds: float
    log_history: list[dict[str, Any]]
    baselines: dict[str, Any] | None = None  # the image-blind baselines on the same eval images (Baselines.to_dict())
    gallery: list[Any] = field(default_factory=list, repr=False)  # report.html's gallery items (images with boxes), worst first
    title: str = "vlmdet train"
    names: tuple[str, str] = ("base model (before)", "fine-tuned (after)")  # the report's column names
    subject: str = "the fine-tuned model"  # how the verdict names the trained model

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.log_history

    @property
    def report(self) -> Path | None:
        """``report.html`` of the run, when it was written."""
        p = Path(self.output_dir) / "report.html"
        return p if p.is_file() else None

    @property
    def columns(self) -> dict[str, dict[str, Any] | None]:
        """The report's columns: before, after and each baseline."""
        from vlmdet.report import run_columns

        return run_columns(self.before, self.after, {"before_name": self.names[0], "after_name": self.names[1]}, self.baselines)

    def verdict(self) -> str | None:
        from vlmdet.metrics.baselines import verdict

        return verdict((self.after or {}).get("map50"), self.baselines, self.subject) if self.baselines else None

    def _repr_html_(self) -> str:
        from vlmdet.report.html import fragment

        head = f"{self.title}: {self.steps} steps in {self.train_seconds:.0f} s -> {self.output_dir}"
        return fragment(head, self.columns, gallery=self.gallery, notes=[self.verdict() or ""])


def image_cache(cfg: Any, processor: Any):
    """The run's training-image cache: images shrunk to the model's input size, ``cache_max_mb`` in
    all; ``None`` (decode every time, at full size) with ``cache_images=false``."""
    from vlmdet.data.cache import ImageCache
    from vlmdet.models.processing import shrink_for_model

    if not cfg.cache_images:
        return None
    return ImageCache(cfg.cache_max_mb * 2**20, reduce=lambda image: shrink_for_model(image, processor))


def train(cfg: TrainConfig, extra_callbacks: list[Any] | None = None) -> TrainResult:
    """Run the recipe (see the module docstring); ``extra_callbacks`` are added to the trainer."""
    from transformers import set_seed

    from vlmdet.models.loading import model_dtype
    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.predict.decoding import Decoding
    from vlmdet.report import print_table, run_columns, write_report
    from vlmdet.run import run_baselines
    from vlmdet.report.html import gallery_items
    from vlmdet.rows import RowSource
    from vlmdet.distributed import is_main_process
    from vlmdet.run import prepare_run
    from vlmdet.train.callbacks import ConsoleCallback, DetectionEvalCallback, GradNormCallback, TimeLimitCallback, quiet_progress
    from vlmdet.train.collator import DetectionCollator
    from vlmdet.train.model import setup_trainable, trainable_summary
    from vlmdet.train.trainer import DetectionSeq2SeqTrainer, DetectionSFTTrainer

    set_seed(cfg.seed)
    main = is_main_process()  # the one process that writes files; all of them train and score
    # 1. prepare (every check before anything trains)
    run = prepare_run(cfg, "vlmdet train")
    out, family, processor, settings = run.out, run.family, run.processor, run.settings

    # 2. model
    model = setup_trainable(run.model, family, cfg)
    counts = trainable_summary(model, family)
    log(f"model {run.model_src} ({family.name}, {counts['all_params']:,} params); trainable: "
        + ", ".join(f"{g} {counts[g]:,}" for g in ("vision", "projector", "language", "adapters") if counts[g]))
    for knob, value, default in (("labels", cfg.labels, "completion"), ("target_space", cfg.target_space, "model")):
        if value != default:
            log(f"WARNING: {knob}={value} is a deliberately wrong recipe (ablation); the model will be worse")
    log(f"task {settings.task}, codec {settings.codec.name} {settings.codec_settings}, {len(settings.classes)} classes, "
        f"answers up to {settings.max_new_tokens} tokens")
    log(f"example target: {settings.target(run.train[0])!r}")
    cache = image_cache(cfg, processor)
    train_rows = RowSource(run.train.samples, settings, cache)
    eval_rows = RowSource(run.eval.samples, settings, cache) if run.eval is not None and len(run.eval) else None
    det_samples = run.eval.samples[: cfg.eval.max_samples] if eval_rows is not None else []
    # Scored from the files, as `vlmdet eval` scores them (not from the training cache, whose images are
    # already shrunk by vlmdet rather than by the processor): the report's figures are eval's figures.
    det_images = None

    layout = family.answer_layout
    sft_config = cfg.build_trainer_args(out, has_eval=eval_rows is not None, seq2seq=layout == "seq2seq")
    collator = DetectionCollator(processor, max_length=getattr(sft_config, "max_length", None), dtype=model_dtype(model),
                                 completion_only=cfg.labels == "completion", layout=layout)
    grad_cb = GradNormCallback(family, patience=cfg.grad_check_steps, stop_on_failure=cfg.stop_on_bad_grads)
    decoding = Decoding(cfg.generation)  # one decoding for before, after and every evaluation in between
    det_cb = DetectionEvalCallback(det_samples, settings, processor, batch_size=cfg.eval.batch_size, images=det_images, decoding=decoding,
                                   confidence=cfg.eval.confidence)
    trainer_cls = DetectionSeq2SeqTrainer if layout == "seq2seq" else DetectionSFTTrainer
    trainer = trainer_cls(
        model=model,
        args=sft_config,
        train_dataset=train_rows.dataset(),
        eval_dataset=eval_rows.dataset() if eval_rows is not None else None,
        processing_class=processor,
        data_collator=collator,
        callbacks=[grad_cb, det_cb, ConsoleCallback(), *([TimeLimitCallback(cfg.max_seconds)] if cfg.max_seconds else []), *(extra_callbacks or [])],
        family=family,
        group_lrs={"vision": cfg.lr_vision, "projector": cfg.lr_projector, "language": cfg.lr_language},
    )
    det_cb.attach(trainer)
    quiet_progress(trainer)
    run.folder.start(cfg, run.fingerprint, "sft", run.resume_from)

    # 3. before
    before = None
    columns: dict[str, Any] = {}  # predictions per report column, for the gallery
    before_path = out / BEFORE_FILE
    if run.resume_from and before_path.is_file():
        before = json.loads(before_path.read_text())
    elif cfg.eval.before and det_samples:
        log(f"scoring the base model on {len(det_samples)} eval images (before)")
        preds = Predictor(trainer.model, processor, settings, batch_size=cfg.eval.batch_size, decoding=decoding, confidence=cfg.eval.confidence).predict(
            det_samples, det_images, progress=True, desc="before")
        columns["base model (before)"] = preds
        before = evaluate_predictions(det_samples, preds, settings, cfg.eval.confidence).to_dict()
        if main:
            before_path.write_text(json.dumps(before, indent=2))

    # 4. train
    if run.resume_from:
        log(f"resuming from {run.resume_from}")
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    train_seconds = time.perf_counter() - t0

    # 5. after + save
    trainer.save_model(str(out))  # the Trainer writes from the main process only (and gathers FSDP shards)
    if main:
        processor.save_pretrained(str(out))
        settings.save(out)
    after = None
    if cfg.eval.after and det_samples:
        preds = Predictor(trainer.model, processor, settings, batch_size=cfg.eval.batch_size, decoding=decoding, confidence=cfg.eval.confidence).predict(
            det_samples, det_images, progress=True, desc="after")
        columns["fine-tuned (after)"] = preds
        after = evaluate_predictions(det_samples, preds, settings, cfg.eval.confidence).to_dict()
    meta = {
        "model": run.model_src,
        "family": family.name,
        "data": run.data_src,
        "eval_split": cfg.eval_split,
        "eval_images": len(det_samples),
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "finetune": cfg.finetune,
        "trainable": counts,
        "grad_problems": grad_cb.problems,
        "decoding": decoding.record(),
        "confidence": cfg.eval.confidence,
    }
    baselines = run_baselines(run, det_samples) if main and (before is not None or after is not None) else None
    gallery = gallery_items(det_samples, columns) if baselines is not None else []
    if baselines is not None:
        write_report(out, before, after, meta, gallery=gallery, log_history=trainer.state.log_history, baselines=baselines)
        print_table(run_columns(before, after, meta, baselines), title=f"{family.name} on {cfg.eval_split} ({len(det_samples)} images)")
    run.folder.finish(trainer.state.global_step)
    if main:  # vlmdet's card replaces TRL's generic README.md (base model, prompt, data, scores)
        from vlmdet.report.card import write_card

        write_card(out)
    log(f"saved model, processor and vlmdet.json to {out} ({trainer.state.global_step} steps, {train_seconds:.0f} s)")
    return TrainResult(out, before, after, trainer.state.global_step, train_seconds, trainer.state.log_history,
                       baselines.to_dict() if baselines is not None else None, gallery)
