"""Peak memory of a training run over a large image set: the image cache on, bounded, and off.

    python benchmarks/bench_memory.py                      # 20 000 synthetic 1024x768 images, one epoch each
    python benchmarks/bench_memory.py --images 2000        # a quicker look

Each mode is one real ``vlmdet train`` process (tiny Qwen2.5-VL, full fine-tune, batch 16, one
pass over every image), started from here; its peak resident set size comes from the kernel
(``os.wait4`` rusage of that child). The baseline is the same run with the cache off, in the same
invocation, and every figure is also given as a ratio to it.

The cache before vlmdet bounded it kept every decoded training image at full resolution; that is
measured here too, in this process, on ``--old-sample`` images (RSS growth per image, then
extrapolated to the whole set, since the whole set would not fit in memory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path("runs/bench/memory")


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_mode(name: str, model: Path, data: Path, steps: int, extra: list[str]) -> dict:
    args = [sys.executable, "-m", "vlmdet", "train", f"model={model}", f"data={data}", f"output_dir={OUT / 'runs' / name}", "--overwrite",
            "eval_split=", "finetune=full", "gradient_checkpointing=false", "save_strategy=no", f"max_steps={steps}",
            "per_device_train_batch_size=16", "logging_steps=200", "learning_rate=1e-3", *extra]
    t0 = time.perf_counter()
    log = (OUT / f"{name}.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mode {name} failed (exit {proc.returncode}); see {OUT / f'{name}.log'}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall, "settings": extra}


def old_cache_growth(data: Path, n: int) -> dict:
    """What the unbounded full-resolution cache held: decode ``n`` images into a dict, measure RSS growth."""
    from vlmdet.data.readers import open_dataset

    samples = open_dataset(data, "train").samples[:n]
    before = rss_mb()
    cache = {s.id: s.load_image() for s in samples}
    grown = rss_mb() - before
    per_image = grown / len(cache)
    return {"images_measured": len(cache), "rss_growth_mb": grown, "mb_per_image": per_image}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of every synthetic image")
    p.add_argument("--old-sample", type=int, default=1000, help="images decoded to measure the old full-resolution cache")
    p.add_argument("--bounded-mb", type=int, default=256, help="cache_max_mb of the bounded mode")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    OUT.mkdir(parents=True, exist_ok=True)

    from vlmdet.data.synth import SynthConfig, write_synthetic_coco
    from vlmdet.models.tiny import build_tiny_model

    data = OUT / f"data-{args.images}-{w}x{h}"
    if not (data / "dataset.json").is_file():
        t0 = time.perf_counter()
        print(f"writing {args.images} synthetic {w}x{h} images to {data} ...", flush=True)
        write_synthetic_coco(data, SynthConfig(size=(w, h), splits={"train": args.images}), workers=os.cpu_count() or 1)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    model = OUT / "tiny-qwen2_5_vl"
    if not (model / "config.json").is_file():
        build_tiny_model("qwen2_5_vl", model)
    steps = math.ceil(args.images / 16)

    results = {}
    for name, extra in (
        ("cache off (baseline)", ["cache_images=false"]),
        ("cache on, default bound (2048 MB)", ["cache_images=true"]),
        (f"cache on, bounded to {args.bounded_mb} MB", ["cache_images=true", f"cache_max_mb={args.bounded_mb}"]),
    ):
        print(f"running: {name} ({steps} steps over {args.images} images) ...", flush=True)
        results[name] = run_mode(name.split(" (")[0].replace(" ", "_").replace(",", ""), model, data, steps, extra)
        print(f"  peak RSS {results[name]['peak_rss_mb']:.0f} MB, {results[name]['wall_s']:.0f} s", flush=True)
    old = old_cache_growth(data, args.old_sample)
    old["projected_mb_for_all_images"] = old["mb_per_image"] * args.images

    base = results["cache off (baseline)"]["peak_rss_mb"]
    print(f"\npeak RSS of one training pass over {args.images} images of {w}x{h} (tiny Qwen2.5-VL, batch 16, one process)")
    print(f"  {'mode':40s} {'peak RSS':>10s} {'ratio':>6s} {'wall':>7s}")
    for name, r in results.items():
        print(f"  {name:40s} {r['peak_rss_mb']:8.0f} MB {r['peak_rss_mb'] / base:6.2f} {r['wall_s']:6.0f}s")
    print(f"  old full-resolution cache: +{old['mb_per_image']:.2f} MB per image (measured on {old['images_measured']} images) "
          f"-> ~{old['projected_mb_for_all_images'] / 1024:.1f} GB for {args.images} images ({(base + old['projected_mb_for_all_images']) / base:.0f}x the baseline)")
    (OUT / "results.json").write_text(json.dumps({"modes": results, "old_full_resolution_cache": old, "images": args.images, "size": [w, h]}, indent=2))


if __name__ == "__main__":
    main()
