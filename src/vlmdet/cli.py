"""The ``vlmdet`` command line. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# vlmdet never reaches a model hub unless the user asks: a hub id works when online, but a
# missing local folder must not turn into a network request.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from vlmdet.families import TinySpec
    from vlmdet.models.tiny import TINY_INFO_FILE, build_tiny_model

    overrides = {k: v for k, v in {"hidden_size": args.hidden_size, "num_layers": args.layers, "seed": args.seed}.items() if v is not None}
    if args.classes:
        overrides["class_names"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    out = build_tiny_model(args.family, args.out, TinySpec(**overrides))
    print((out / TINY_INFO_FILE).read_text())
    print(f"tiny {args.family} model written to {out}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from vlmdet.data.synth import SynthConfig, write_synthetic_coco

    cfg = SynthConfig(
        seed=args.seed,
        splits={"train": args.train, "val": args.val, "test": args.test},
        **({"classes": tuple(args.classes.split(","))} if args.classes else {}),
        **{k: getattr(args, k) for k in ("min_side", "max_side", "max_objects", "empty_fraction", "max_overlap") if getattr(args, k) is not None},
    )
    out = write_synthetic_coco(args.out, cfg)
    for split, n in cfg.splits.items():
        print(f"{split:>5}: {n} images -> {out / split / 'annotations.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vlmdet import __version__
    from vlmdet.families import FAMILIES

    parser = argparse.ArgumentParser(prog="vlmdet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vlmdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tiny-model", help="write an offline tiny model (real transformers classes, random weights)")
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--classes", default=None, help="comma-separated class names to include in the tokenizer corpus")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    s = dsub.add_parser("synth", help="write a synthetic shapes dataset in COCO format")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train", type=int, default=200)
    s.add_argument("--val", type=int, default=50)
    s.add_argument("--test", type=int, default=50)
    s.add_argument("--classes", default=None, help="comma-separated subset of: circle,square,triangle,star,cross,diamond")
    s.add_argument("--min-side", type=int, default=None)
    s.add_argument("--max-side", type=int, default=None)
    s.add_argument("--max-objects", type=int, default=None)
    s.add_argument("--empty-fraction", type=float, default=None)
    s.add_argument("--max-overlap", type=float, default=None)
    s.set_defaults(func=_cmd_data_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"vlmdet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
