"""Mutation testing: plant small bugs in the modules that decide a result (codecs, labels, metrics,
collator, predictor, decoding, recipe, rewards, readers, rl, export, the Python API and the run
preparation), run the fast tests that should catch them, and report the share caught per module.

    .venv/bin/pip install -c requirements/constraints.txt mutmut     # once (not a test dependency)
    .venv/bin/python tools/mutation.py --sample 30 --modules codecs metrics collator predictor labels rewards readers decoding
                                                                      # 240 mutants: 190 judged in 75 min on 2 cores (+8 min the first
                                                                      # time: mutmut plants every mutant and maps tests to functions)
    .venv/bin/python tools/mutation.py --sample 8 --modules recipe rl export api run   # the modules whose tests train models
    .venv/bin/python tools/mutation.py --sample 30 --modules rewards readers   # only those groups
    .venv/bin/python tools/mutation.py                                # every mutant, hours
    .venv/bin/python tools/mutation.py --rerun-timeouts               # the mutants that timed out, again (idle machine)
    .venv/bin/python tools/mutation.py --report                       # the table of the last run only

mutmut (a well-kept tool: https://github.com/boxed/mutmut) does the work: it copies the package into
``mutants/``, plants each mutation (an operator flipped, a constant changed, a call's argument
dropped...), and runs only the tests that reach the mutated function. What it mutates and which
tests it may run are set in ``[tool.mutmut]`` of ``pyproject.toml``. A mutant is *caught* when a
test fails (or times out) with it in place; it *survives* when every test still passes — a bug the
suite would miss. This script adds the per-module table the closing note quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {  # module group -> files (relative to src/vlmdet)
    "codecs": ["codecs/base.py", "codecs/json_boxes.py", "codecs/loc_tokens.py", "codecs/qwen2_vl.py"],
    "metrics": ["metrics/coco.py", "metrics/iou.py", "metrics/cocofile.py", "metrics/matching.py"],
    "collator": ["train/collator.py"],
    "predictor": ["predict/predictor.py"],
    "recipe": ["train/recipe.py"],
    "labels": ["codecs/labels.py"],
    "rewards": ["rewards.py"],
    "readers": ["data/readers/coco.py", "data/readers/yolo.py", "data/readers/jsonl.py", "data/readers/voc.py", "data/readers/csv_boxes.py",
                "data/readers/labelstudio.py", "data/readers/common.py"],
    "decoding": ["predict/decoding.py"],
    "rl": ["train/rl.py"],
    "export": ["export.py"],
    "api": ["api.py", "commands.py"],
    "run": ["run.py"],
}


def metas(groups: list[str] | None = None):
    """``(group, meta file)`` of each mutated file of ``groups`` (all when None) that mutmut has planted:
    its ``exit_code_by_key`` holds each mutant's verdict (None: not run)."""
    for group, files in MODULES.items():
        if groups and group not in groups:
            continue
        for rel in files:
            meta = ROOT / "mutants" / "src" / "vlmdet" / (rel + ".meta")
            if meta.is_file():
                yield group, meta


def sample_names(per_module: int, seed: int = 0, groups: list[str] | None = None) -> list[str]:
    """``per_module`` mutant names of each module group (or of ``groups``), drawn with ``seed`` (all when fewer)."""
    import random

    rng = random.Random(seed)
    mutants: dict[str, list[str]] = {}
    for group, meta in metas(groups):
        mutants.setdefault(group, []).extend(sorted(json.loads(meta.read_text())["exit_code_by_key"]))
    return [name for group in mutants.values() for name in rng.sample(group, min(per_module, len(group)))]


def forget(groups: list[str] | None) -> None:
    """Clear mutmut's verdicts for the mutants of ``groups`` (all when None), so a sampled run's table
    counts exactly the mutants it ran."""
    for _, meta in metas(groups):
        data = json.loads(meta.read_text())
        data["exit_code_by_key"] = dict.fromkeys(data["exit_code_by_key"])
        meta.write_text(json.dumps(data))


def report() -> dict[str, dict[str, int]]:
    """Per module group: mutants by mutmut's own verdict (killed, timeout, survived, no tests...),
    from its result files in ``mutants/``; mutants a sampled run did not reach are left out."""
    from mutmut.stats import status_by_exit_code

    counts: dict[str, Counter] = {group: Counter() for group in MODULES}
    for group, meta in metas():
        for code in json.loads(meta.read_text())["exit_code_by_key"].values():
            if code is not None:  # None: not run (a sampled run leaves the rest unchecked)
                counts[group][status_by_exit_code.get(code, "other")] += 1
    return {group: dict(c) for group, c in counts.items()}


def print_table(table: dict[str, dict[str, int]]) -> None:
    """Kill rate as mutmut scores it: (killed + timeout) / all run. A timeout is also listed apart: a
    mutant that loops is caught, but a test slowed by a busy machine looks the same — rerun those
    with --rerun-timeouts on an idle machine to tell."""
    cols = ("killed", "timeout", "survived", "no tests")
    print(f"{'module':10s} {'mutants':>8s} " + " ".join(f"{c:>9s}" for c in cols) + f" {'kill rate':>10s}")
    total: Counter = Counter()
    for group, c in list(table.items()) + [("all", None)]:
        c = total if c is None else c
        judged = sum(c.values())
        rate = (c.get("killed", 0) + c.get("timeout", 0)) / judged if judged else float("nan")
        print(f"{group:10s} {sum(c.values()):8d} " + " ".join(f"{c.get(k, 0):9d}" for k in cols) + f" {rate:10.1%}")
        if group != "all":
            total.update(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="only print the table of the last run")
    p.add_argument("--max-children", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="forget the previous run's results (mutants/)")
    p.add_argument("--sample", type=int, default=0, help="run N mutants per module, drawn with a fixed seed (0: all)")
    p.add_argument("--modules", nargs="+", choices=sorted(MODULES), help="sample only these module groups (with --sample)")
    p.add_argument("--rerun-timeouts", action="store_true", help="run again only the mutants that timed out (do it on an idle machine)")
    args = p.parse_args()
    if not args.report:
        mutmut = Path(sys.executable).parent / "mutmut"
        if not mutmut.is_file():
            raise SystemExit("mutmut is not installed: .venv/bin/pip install -c requirements/constraints.txt mutmut")
        if args.fresh:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        names: list[str] = []
        if args.rerun_timeouts:
            from mutmut.stats import status_by_exit_code

            for _, meta in metas():
                data = json.loads(meta.read_text())
                codes = data["exit_code_by_key"]
                again = [k for k, v in codes.items() if v is not None and status_by_exit_code.get(v) == "timeout"]
                for k in again:  # forget the verdict, or mutmut keeps it
                    codes[k] = None
                meta.write_text(json.dumps(data))
                names += again
            print(f"running {len(names)} mutants that timed out again", flush=True)
            if not names:
                print_table(report())
                return
        elif args.sample:
            if next(metas(), None) is None:
                # mutmut plants every mutant (and runs the tests once to learn which reach what) on its
                # first run; one small function's mutants are enough to make it do that and stop
                subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children), "vlmdet.rewards.x_format_reward__mutmut_1"],
                               cwd=ROOT, check=False)
            forget(args.modules)  # the table is this sample's, not what earlier runs left
            names = sample_names(args.sample, groups=args.modules)
            print(f"running {len(names)} sampled mutants ({args.sample} per module)", flush=True)
        subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children), *names], cwd=ROOT, check=False)
    table = report()
    print_table(table)
    out = ROOT / "runs" / "mutation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
