"""``vlmdet train``: the recipe, top to bottom.

1. model   — load (or build a tiny one offline), choose what trains (LoRA / QLoRA / full, freezes)
2. data    — read train/eval splits into Samples; TaskSettings = family codec + prompt builder
3. before  — score the base model on the eval split (same prompts and decoding as "after")
4. train   — TRL SFTTrainer on prompt/completion rows; completion-only labels; callbacks for
             gradient flow, detection metrics and console lines; checkpoints for --resume
5. after   — score the fine-tuned model; save model + processor + vlmdet.json; report.md/json
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmdet.data.readers import ReadOptions, open_dataset
from vlmdet.data.sample import DetectionDataset, Sample
from vlmdet.rows import TaskSettings
from vlmdet.train.config import SFT_DEFAULTS, TrainConfig

BEFORE_FILE = "before_metrics.json"


class RowSource:
    """Samples as TRL prompt/completion rows, images decoded on access (and cached if asked)."""

    def __init__(self, samples: list[Sample], settings: TaskSettings, cache: dict[str, Any] | None = None) -> None:
        self.samples, self.settings, self.cache = samples, settings, cache

    def image(self, sample: Sample):
        if self.cache is None:
            return sample.load_image()
        if sample.id not in self.cache:
            self.cache[sample.id] = sample.load_image()
        return self.cache[sample.id]

    def row(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {**self.settings.row(s, self.image(s)), "id": s.source or s.id}

    def dataset(self):
        """A ``datasets.Dataset`` of indices whose transform builds rows on the fly.

        TRL wants a ``datasets.Dataset``; materialising every image into Arrow would copy the whole
        image set, so the rows (and images) are produced lazily by ``with_transform``.
        """
        import datasets

        def transform(batch: dict[str, list]) -> dict[str, list]:
            rows = [self.row(i) for i in batch["index"]]
            return {k: [r[k] for r in rows] for k in rows[0]}

        return datasets.Dataset.from_dict({"index": list(range(len(self.samples)))}).with_transform(transform)


@dataclass
class TrainResult:
    output_dir: Path
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    steps: int
    train_seconds: float
    log_history: list[dict[str, Any]]


def log(msg: str) -> None:
    print(f"[vlmdet] {msg}", flush=True)


def prepare_model_source(cfg: TrainConfig, out: Path) -> str:
    """A ``tiny:<family>`` model is built offline under the run folder (once)."""
    if not cfg.model.startswith("tiny:"):
        return cfg.model
    from vlmdet.models.tiny import build_tiny_model

    family = cfg.model.split(":", 1)[1]
    path = out / f"base-{family}"
    if not (path / "config.json").is_file():
        log(f"building tiny {family} model -> {path}")
        spec_overrides = dict(cfg.tiny)
        build_tiny_model(family, path, seed=cfg.seed, **spec_overrides)
    return str(path)


def prepare_data_source(cfg: TrainConfig, out: Path) -> str:
    """``data: synth`` writes the synthetic shapes set under the run folder (once)."""
    if cfg.data != "synth":
        return cfg.data
    from vlmdet.data.synth import SynthConfig, write_synthetic_coco

    path = out / "data"
    if not (path / "dataset.json").is_file():
        synth = SynthConfig(**{"seed": cfg.seed, **cfg.synth})
        log(f"writing synthetic dataset -> {path} ({synth.splits})")
        write_synthetic_coco(path, synth)
    return str(path)


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` that finished writing (a run killed mid-save leaves a partial one)."""
    done = []
    for path in out.glob("checkpoint-*"):
        step = path.name.split("-", 1)[1]
        if step.isdigit() and (path / "trainer_state.json").is_file() and any(path.glob("*.safetensors")):
            done.append((int(step), path))
    return str(max(done)[1]) if done else None


def answer_budget(settings: TaskSettings, samples: list[Sample], tokenizer: Any) -> int:
    """Generation budget: the longest training target in tokens, plus a margin."""
    longest = max((len(tokenizer(settings.target(s), add_special_tokens=False)["input_ids"]) for s in samples), default=32)
    return int(math.ceil(longest * 1.25)) + 8


def build_sft_config(cfg: TrainConfig, out: Path, has_eval: bool, seq2seq: bool = False):
    """TRL ``SFTConfig`` from vlmdet's defaults and ``cfg.sft`` — or, for an encoder-decoder, a plain
    ``TrainingArguments`` with the same values (SFT-only fields such as ``max_length`` dropped)."""
    import dataclasses

    from transformers import TrainingArguments
    from trl import SFTConfig

    kwargs = {**SFT_DEFAULTS, **cfg.sft, "output_dir": str(out), "seed": cfg.seed}
    on_gpu = torch.cuda.is_available()
    kwargs.setdefault("bf16", on_gpu and torch.cuda.is_bf16_supported())
    if not on_gpu:
        # TRL defaults bf16=True, which fails on a CPU-only machine: set it from the hardware.
        kwargs["bf16"] = False
        kwargs["fp16"] = False
        kwargs.setdefault("use_cpu", True)
    if not has_eval:
        kwargs["eval_strategy"] = "no"
    if kwargs.get("eval_strategy") == "steps" and kwargs.get("save_strategy") == "steps" and kwargs.get("load_best_model_at_end"):
        kwargs["save_steps"] = kwargs.get("eval_steps", kwargs["save_steps"])
    if seq2seq:
        allowed = {f.name for f in dataclasses.fields(TrainingArguments)}
        return TrainingArguments(**{k: v for k, v in kwargs.items() if k in allowed})
    return SFTConfig(**kwargs)


def read_splits(cfg: TrainConfig, data: str) -> tuple[DetectionDataset, DetectionDataset | None]:
    opts = ReadOptions(on_error=cfg.on_bad_data, classes=cfg.classes)
    train = open_dataset(data, cfg.train_split, opts)
    log(train.report.summary())
    if not len(train):
        raise ValueError(f"{data} [{cfg.train_split}]: no training samples")
    eval_ds = None
    if cfg.eval_split:
        eval_opts = ReadOptions(on_error=cfg.on_bad_data, classes=cfg.classes or (train.classes if cfg.task != "ground" else None))
        eval_ds = open_dataset(data, cfg.eval_split, eval_opts)
        log(eval_ds.report.summary())
    return train, eval_ds


def train(cfg: TrainConfig, extra_callbacks: list[Any] | None = None) -> TrainResult:
    """Run the recipe (see the module docstring); ``extra_callbacks`` are added to the trainer."""
    from transformers import set_seed

    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.report import print_table, write_report
    from vlmdet.train.callbacks import ConsoleCallback, DetectionEvalCallback, GradNormCallback, quiet_progress
    from vlmdet.train.collator import DetectionCollator
    from vlmdet.train.model import load_model, model_dtype, setup_trainable, trainable_summary
    from vlmdet.train.trainer import DetectionSeq2SeqTrainer, DetectionSFTTrainer

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))

    # 1. model
    model_src = prepare_model_source(cfg, out)
    model, processor, family = load_model(model_src, cfg.family, quantize_4bit=cfg.finetune == "qlora", max_pixels=cfg.max_pixels)
    model = setup_trainable(model, family, cfg)
    counts = trainable_summary(model, family)
    log(f"model {model_src} ({family.name}, {counts['all_params']:,} params); trainable: "
        + ", ".join(f"{g} {counts[g]:,}" for g in ("vision", "projector", "language", "adapters") if counts[g]))

    # 2. data
    data_src = prepare_data_source(cfg, out)
    train_ds, eval_ds = read_splits(cfg, data_src)
    classes = list(cfg.classes or train_ds.classes)
    settings = TaskSettings.for_model(family.name, processor, task=cfg.task, classes=classes, target_space=cfg.target_space)
    for knob, value, default in (("labels", cfg.labels, "completion"), ("target_space", cfg.target_space, "model")):
        if value != default:
            log(f"WARNING: {knob}={value} is a deliberately wrong recipe (ablation); the model will be worse")
    settings.max_new_tokens = cfg.eval.max_new_tokens or answer_budget(settings, train_ds.samples, processor.tokenizer)
    log(f"task {settings.task}, codec {settings.codec.name} {settings.codec_settings}, {len(classes)} classes, "
        f"answers up to {settings.max_new_tokens} tokens")
    log(f"example target: {settings.target(train_ds[0])!r}")
    cache: dict[str, Any] | None = {} if cfg.cache_images else None
    train_rows = RowSource(train_ds.samples, settings, cache)
    eval_rows = RowSource(eval_ds.samples, settings, cache) if eval_ds is not None and len(eval_ds) else None
    det_samples = eval_ds.samples[: cfg.eval.max_samples] if eval_rows is not None else []
    det_images = {s.id: eval_rows.image(s) for s in det_samples} if eval_rows is not None else None

    seq2seq = family.architecture == "seq2seq"
    sft_config = build_sft_config(cfg, out, has_eval=eval_rows is not None, seq2seq=seq2seq)
    collator = DetectionCollator(processor, max_length=getattr(sft_config, "max_length", None), dtype=model_dtype(model),
                                 completion_only=cfg.labels == "completion", seq2seq=seq2seq)
    grad_cb = GradNormCallback(family, patience=cfg.grad_check_steps, stop_on_failure=cfg.stop_on_bad_grads)
    det_cb = DetectionEvalCallback(det_samples, settings, processor, batch_size=cfg.eval.batch_size, images=det_images)
    trainer_cls = DetectionSeq2SeqTrainer if seq2seq else DetectionSFTTrainer
    trainer = trainer_cls(
        model=model,
        args=sft_config,
        train_dataset=train_rows.dataset(),
        eval_dataset=eval_rows.dataset() if eval_rows is not None else None,
        processing_class=processor,
        data_collator=collator,
        callbacks=[grad_cb, det_cb, ConsoleCallback(), *(extra_callbacks or [])],
        family=family,
        group_lrs={"vision": cfg.lr_vision, "projector": cfg.lr_projector, "language": cfg.lr_language},
    )
    det_cb.attach(trainer)
    quiet_progress(trainer)

    # 3. before
    resume_from = last_complete_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None:
        log(f"--resume: no checkpoint in {out}; starting from the beginning")
    before = None
    before_path = out / BEFORE_FILE
    if resume_from and before_path.is_file():
        before = json.loads(before_path.read_text())
    elif cfg.eval.before and det_samples:
        log(f"scoring the base model on {len(det_samples)} eval images (before)")
        preds = Predictor(trainer.model, processor, settings, batch_size=cfg.eval.batch_size).predict(det_samples, det_images, progress=True, desc="before")
        before = evaluate_predictions(det_samples, preds, settings).to_dict()
        before_path.write_text(json.dumps(before, indent=2))

    # 4. train
    if resume_from:
        log(f"resuming from {resume_from}")
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t0

    # 5. after + save
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    settings.save(out)
    after = None
    if cfg.eval.after and det_samples:
        preds = Predictor(trainer.model, processor, settings, batch_size=cfg.eval.batch_size).predict(det_samples, det_images, progress=True, desc="after")
        after = evaluate_predictions(det_samples, preds, settings).to_dict()
    meta = {
        "model": model_src,
        "family": family.name,
        "data": data_src,
        "eval_split": cfg.eval_split,
        "eval_images": len(det_samples),
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "finetune": cfg.finetune,
        "trainable": counts,
        "grad_problems": grad_cb.problems,
    }
    if before is not None or after is not None:
        write_report(out, before, after, meta)
        print_table({"base model (before)": before, "fine-tuned (after)": after}, title=f"{family.name} on {cfg.eval_split} ({len(det_samples)} images)")
    log(f"saved model, processor and vlmdet.json to {out} ({trainer.state.global_step} steps, {train_seconds:.0f} s)")
    return TrainResult(out, before, after, trainer.state.global_step, train_seconds, trainer.state.log_history)
