"""Training benchmarks for vlmdet (CPU-friendly; the figures in the README come from here).

    python benchmarks/bench_train.py time-to-quality   # the demo's mAP50 against wall seconds
    python benchmarks/bench_train.py time-to-quality --bases tiny-pretrained:qwen2_5_vl tiny:qwen2_5_vl \
        --set synth.colour_by_class=false   # the same curve from the pre-trained and the random-init base
    python benchmarks/bench_train.py step-speed        # our training step vs a raw TRL SFTTrainer step
    python benchmarks/bench_train.py ablation          # why the recipe matters, same budget each
    python benchmarks/bench_train.py all

Every comparison runs its baseline in the same invocation, on the same machine, and reports
ratios; nothing here is a pass/fail threshold. Results also go to ``runs/bench/*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path("runs/bench")


def _demo_cfg(out: Path, *extra: str):
    from vlmdet.train.config import load_config

    return load_config("demo", [f"output_dir={out}", "overwrite=true", *extra])


def time_to_quality(args) -> dict:
    """Run the demo as configured (once per ``--bases`` model, same settings otherwise) and report
    held-out mAP50 at each evaluation against wall seconds. A pre-trained base is taken from the
    cache: build it first (``vlmdet tiny-model --family qwen2_5_vl --pretrain``) so its own time is not counted."""
    from vlmdet.train.recipe import train

    runs = {}
    for base in args.bases or [None]:
        extra = [f"model={base}"] if base else []
        name = base or "demo config"
        t0 = time.perf_counter()
        result = train(_demo_cfg(OUT / "ttq" / (base or "demo").replace(":", "-"), *extra, *args.set))
        wall = time.perf_counter() - t0
        points = [(e["eval_wall_seconds"], e["step"], e["eval_map50"], e["eval_map"]) for e in result.log_history if "eval_map50" in e]
        runs[name] = {"points": points, "whole_command_seconds": wall, "before": result.before, "after": result.after,
                      "baselines": getattr(result, "baselines", None), "train_seconds": result.train_seconds}
    for name, r in runs.items():
        print(f"\ntime-to-quality, base {name} (wall seconds since the first training step)")
        print(f"{'wall s':>8} {'step':>6} {'mAP50':>7} {'mAP':>7}")
        for w, st, m50, m in r["points"]:
            print(f"{w:8.0f} {st:6d} {m50:7.3f} {m:7.3f}")
        print(f"whole run {r['whole_command_seconds']:.0f} s (model + data + before/after eval included); "
              f"before: mAP50 {r['before']['map50']:.3f}, after: mAP50 {r['after']['map50']:.3f}")
    return runs


class StepTimer:
    """A TrainerCallback-compatible timer: seconds from ``on_step_begin`` to ``on_step_end`` (forward,
    backward, optimizer step and the callbacks in between; the batch is fetched and collated before
    ``on_step_begin``, so data loading is not included) after ``warmup`` steps."""

    def __new__(cls, warmup: int = 3):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times, self._t, self.loop = [], None, []

            def on_step_begin(self, args, state, control, **kw):
                self._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if state.global_step > warmup:
                    self.times.append(time.perf_counter() - self._t)
                    self.loop.append(time.perf_counter())

            @property
            def loop_per_step(self) -> float:
                """Mean seconds between step ends: compute plus fetching and collating the batch."""
                return (self.loop[-1] - self.loop[0]) / max(1, len(self.loop) - 1)

            @property
            def median(self) -> float:
                t = sorted(self.times)
                return t[len(t) // 2]

        return _Timer()


def step_speed(args) -> dict:
    """Seconds per training step: vlmdet's recipe vs a raw TRL SFTTrainer, same tiny model and batch."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from vlmdet.data.readers import open_dataset
    from vlmdet.rows import TaskSettings
    from vlmdet.models.loading import set_max_pixels
    from vlmdet.run import data_source, model_source
    from vlmdet.train.recipe import train

    base = OUT / "speed"
    cfg = _demo_cfg(base / "ours", f"max_steps={args.steps}", "eval.before=false", "eval.after=false", "eval_strategy=no", "save_strategy=no", "logging_steps=1000")
    model_dir = model_source(cfg, base)
    data_dir = data_source(cfg, base)
    cfg.model, cfg.data = model_dir, data_dir
    batch = cfg.sft["per_device_train_batch_size"]
    results = {}

    # raw TRL: the cookbook way — rows with embedded images in a datasets.Dataset, TRL's own
    # collator, SFTConfig defaults (gradient checkpointing on); only what a CPU needs is changed.
    processor = AutoProcessor.from_pretrained(model_dir)
    if cfg.max_pixels:  # same image budget (so the same sequences) as the demo recipe
        set_max_pixels(processor, cfg.max_pixels)
    ds = open_dataset(data_dir, "train")
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=ds.classes)
    raw = datasets.Dataset.from_list([settings.row(s) for s in ds.samples[: batch * (args.steps + 2)]])
    for name, gc in (("raw TRL, its defaults", True), ("raw TRL, no checkpointing", False)):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_pretrained(model_dir)
        sft = SFTConfig(output_dir=str(base / "raw"), max_steps=args.steps, per_device_train_batch_size=batch, learning_rate=1e-3,
                        bf16=False, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=gc, report_to="none",
                        save_strategy="no", logging_steps=1000, disable_tqdm=True, max_length=None)
        timer = StepTimer()
        SFTTrainer(model=model, args=sft, train_dataset=raw, processing_class=processor, callbacks=[timer]).train()
        results[name] = (timer.median, timer.loop_per_step)

    # ours: the demo recipe end to end (lazy rows, collator checks, gradient-norm callback, ...)
    timer = StepTimer()
    train(cfg, extra_callbacks=[timer])
    results["vlmdet (demo recipe)"] = (timer.median, timer.loop_per_step)
    ours = results["vlmdet (demo recipe)"]
    print(f"\nseconds per step (after 3 warm-up steps, batch {batch}, tiny Qwen2.5-VL, {args.steps} steps each, one process)")
    print(f"  {'':28s} {'compute (median)':>17s} {'ratio':>6s} {'whole loop incl. data':>22s} {'ratio':>6s}")
    for k, (c, w) in results.items():
        print(f"  {k:28s} {c:15.3f} s {c / ours[0]:6.2f} {w:20.3f} s {w / ours[1]:6.2f}")
    return {k: {"compute_s_per_step": c, "loop_s_per_step": w} for k, (c, w) in results.items()}


def ablation(args) -> dict:
    """Same budget, three recipes: correct; labels over the whole sequence; Qwen2.5-VL targets in
    original-image pixels instead of the smart-resized space."""
    from vlmdet.train.recipe import train

    variants = {"correct recipe": [], "labels over whole sequence": ["labels=all"], "targets in original pixels": ["target_space=original"]}
    rows = {}
    for name, extra in variants.items():
        r = train(_demo_cfg(OUT / "ablation" / name.replace(" ", "_"), *extra, *args.set))
        rows[name] = {"before_map50": r.before["map50"], "after_map50": r.after["map50"], "after_map": r.after["map"],
                      "after_mean_iou": r.after["mean_iou"], "after_parse_failures": r.after["parse_failure_rate"], "train_seconds": r.train_seconds}
    print(f"\nablation (same budget each: demo config{' + ' + ' '.join(args.set) if args.set else ''})")
    print(f"{'recipe':32s} {'mAP50':>7} {'mAP':>7} {'IoU':>6} {'parse-fail':>10} {'train s':>8}")
    for name, r in rows.items():
        print(f"{name:32s} {r['after_map50']:7.3f} {r['after_map']:7.3f} {r['after_mean_iou']:6.3f} {r['after_parse_failures']:10.1%} {r['train_seconds']:8.0f}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["time-to-quality", "step-speed", "ablation", "all"])
    p.add_argument("--steps", type=int, default=30, help="steps per trainer for step-speed")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for the demo config")
    p.add_argument("--bases", nargs="*", default=[], help="time-to-quality: one run per base model (e.g. tiny-pretrained:qwen2_5_vl tiny:qwen2_5_vl)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    todo = ["time-to-quality", "step-speed", "ablation"] if args.which == "all" else [args.which]
    fns = {"time-to-quality": time_to_quality, "step-speed": step_speed, "ablation": ablation}
    for name in todo:
        res = fns[name](args)
        (OUT / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
