"""Where a GRPO step's time goes: generation vs scoring the rewards vs the update, and rollouts per second.

    python benchmarks/bench_rl.py                    # the SFT demo's model (runs/demo) if present, else the demo's tiny model
    python benchmarks/bench_rl.py --steps 20 --set num_generations=4

Runs ``vlmdet rl`` for ``--steps`` steps (the RL demo's settings, eval off) and prints, per step
(median over the steps after the first, which pays for warm-up): seconds in TRL's generation, in
vlmdet's reward scoring and in the update (the policy's forward/backward and the optimizer), each
as a share of the step, and the completions generated per second. In every published GRPO setup the
generation dominates; on a GPU, TRL's vLLM mode (grpo.use_vllm=true) is the switch that moves it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path("runs/bench")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the RL demo config")
    args = p.parse_args()

    from vlmdet.run import data_source, model_source
    from vlmdet.train.config import load_config as load_sft
    from vlmdet.train.rl import rl
    from vlmdet.train.rl_config import load_config

    model, data = "runs/demo", "runs/demo/data"
    if not (Path(model) / "vlmdet.json").is_file():  # no SFT demo here: its tiny model, random weights, same data recipe
        sft = load_sft("demo", [f"output_dir={OUT / 'rl-model'}", "synth.splits={train: 200, val: 20}"])
        model, data = model_source(sft, OUT / "rl-model"), data_source(sft, OUT / "rl-model")
    cfg = load_config("demo", [f"model={model}", f"data={data}", f"output_dir={OUT / 'rl'}", "--overwrite", f"max_steps={args.steps}",
                               "logging_steps=1", "save_strategy=no", "eval.before=false", "eval.after=false", "eval_split=", *args.set])
    result = rl(cfg)
    steps = [e for e in result.log_history if "time/step_s" in e][1:]
    med = {k: statistics.median(e[k] for e in steps) for k in ("time/generation_s", "time/rewards_s", "time/update_s", "time/step_s", "rollouts_per_s")}
    total = med["time/step_s"]
    print(f"\nGRPO step ({cfg.grpo.get('num_generations', 8)} answers per image, {cfg.grpo.get('per_device_train_batch_size', 16)} completions per step, "
          f"model {model}), median of {len(steps)} steps:")
    for name, key in (("generation", "time/generation_s"), ("rewards", "time/rewards_s"), ("update", "time/update_s")):
        print(f"  {name:11s} {med[key]:7.3f} s  {med[key] / total:6.1%}")
    print(f"  {'step':11s} {total:7.3f} s   -> {med['rollouts_per_s']:.1f} rollouts/s")
    (OUT / "rl-speed.json").write_text(json.dumps({"median": med, "steps": len(steps), "model": model}, indent=2))


if __name__ == "__main__":
    main()
