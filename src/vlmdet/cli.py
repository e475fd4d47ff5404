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
    if args.pretrain:
        return _tiny_pretrained(args, overrides)
    if not args.out:
        raise SystemExit("vlmdet tiny-model: --out is required (without --pretrain)")
    out = build_tiny_model(args.family, args.out, TinySpec(**overrides))
    print((out / TINY_INFO_FILE).read_text())
    print(f"tiny {args.family} model written to {out}")
    return 0


def _tiny_pretrained(args: argparse.Namespace, overrides: dict) -> int:
    import dataclasses
    import json
    import shutil

    from vlmdet.config import parse_overrides
    from vlmdet.families import TinySpec
    from vlmdet.models.pretrained import PRETRAIN_FILE, PretrainRecipe, ensure_pretrained, summary

    recipe_fields = {f.name for f in dataclasses.fields(PretrainRecipe)}
    spec_fields = {f.name for f in dataclasses.fields(TinySpec)}
    recipe, spec = {}, dict(overrides)
    for key, value in parse_overrides(args.set or []):
        head, _, name = key.partition(".")
        target, fields = {"pretrain": (recipe, recipe_fields), "tiny": (spec, spec_fields)}.get(head, (None, set()))
        if target is None or name not in fields:
            raise SystemExit(f"vlmdet tiny-model: unknown setting {key!r}; use pretrain.<{'|'.join(sorted(recipe_fields))}> "
                             f"or tiny.<TinySpec field>")
        target[name] = tuple(value) if isinstance(value, list) else value
    path = ensure_pretrained(args.family, TinySpec(**spec), PretrainRecipe(**recipe))
    scores = json.loads((path / PRETRAIN_FILE).read_text())
    print(f"tiny-pretrained:{args.family}: {summary(scores)}; built in {scores['seconds']:.0f} s")
    if args.out:
        shutil.copytree(path, args.out, dirs_exist_ok=True)
        print(f"copied to {args.out}")
    else:
        print(f"cached in {path}")
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


def _holdout(args: argparse.Namespace):
    from vlmdet.data.splits import Holdout

    return Holdout(args.val_fraction, args.test_fraction, args.seed)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    import json

    from vlmdet.datatools import data_stats

    stats = data_stats(args.data, model=args.model, family=args.family, max_pixels=args.max_pixels, batch_size=args.batch_size,
                       holdout=_holdout(args), on_bad_data=args.on_bad_data)
    print(json.dumps(stats.to_dict(), indent=2, default=str) if args.json else stats.text())
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from vlmdet.datatools import data_convert

    done = data_convert(args.data, args.to, args.out, holdout=_holdout(args), on_bad_data=args.on_bad_data)
    for split, counts in done.items():
        extra = "".join(f", {v} {k.replace('_', ' ')}" for k, v in counts.items() if k not in ("images", "boxes") and v)
        print(f"{split:>5}: {counts.get('images', 0)} images, {counts.get('boxes', 0)} boxes{extra}")
    print(f"{args.to} dataset written to {args.out}")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from vlmdet.datatools import data_show

    out = data_show(args.data, args.out, split=args.split, n=args.n, seed=args.seed, holdout=_holdout(args), on_bad_data=args.on_bad_data)
    print(f"contact sheet of {args.split} written to {out}")
    return 0


def _run_control(args: argparse.Namespace) -> list[str]:
    """``--resume`` / ``--overwrite`` as config overrides (they steer the run, they are not settings of it)."""
    return [f"{k}=true" for k in ("resume", "overwrite") if getattr(args, k, False)]


def _cli_interrupted(exc, command: str, config_arg: str | None, extra: list[str]) -> int:
    """Ctrl-C during training: one line saying where the last checkpoint is and how to resume (the
    command line's resume command, where the Python API's message gives the Python call)."""
    import shlex

    again = " ".join(["vlmdet", command] + (["--config", shlex.quote(config_arg)] if config_arg else []) + [shlex.quote(e) for e in extra if e not in ("--resume", "--overwrite")] + ["--resume"])
    print(f"\n{exc.line(again)}", file=sys.stderr)
    return 130


def _cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from vlmdet.commands import Interrupted, train

    config = args.config
    if config is None and not extra:
        config = "demo"
        print("[vlmdet] no settings: running the offline demo (--config demo)", flush=True)
    try:
        train(config, overrides=extra + _run_control(args))
    except Interrupted as exc:
        return _cli_interrupted(exc, "train", config, extra + _run_control(args))
    return 0


def _generation(items: list[str] | None) -> dict:
    """``--generation num_beams=3 --generation repetition_penalty=1.1`` -> a GenerationConfig override dict."""
    from vlmdet.config import parse_overrides

    return dict(parse_overrides([i if "=" in i else f"{i}=" for i in items or []]))


def _cmd_rl(args: argparse.Namespace, extra: list[str]) -> int:
    from vlmdet.commands import Interrupted, rl
    from vlmdet.train.rl import rl_demo

    config = args.config
    if config is None and not extra:
        print("[vlmdet] no settings: running the offline RL demo (--config demo): GRPO from the SFT demo's model", flush=True)
        return rl_demo(_run_control(args))
    try:
        rl(config, overrides=extra + _run_control(args))
    except Interrupted as exc:
        return _cli_interrupted(exc, "rl", config, extra + _run_control(args))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from vlmdet.commands import evaluate

    endpoint = None
    if args.endpoint:
        from vlmdet.predict.endpoint import EndpointSpec

        if not args.served_model:
            raise ValueError("--endpoint needs --served-model NAME: the model name the server serves (GET /v1/models lists them)")
        endpoint = EndpointSpec(args.endpoint, args.served_model, model=args.model, processor=args.processor, api_key_env=args.api_key_env,
                                concurrency=args.concurrency, timeout=args.request_timeout, max_retries=args.max_retries)
    elif args.model is None:
        raise ValueError("give the model to score (--model DIR_OR_ID) or a server to ask (--endpoint URL --served-model NAME)")
    elif args.served_model or args.processor:
        raise ValueError("--served-model and --processor go with --endpoint URL (scoring a served model)")
    try:
        evaluate(
            args.model, args.data, split=args.split, out=args.out, batch_size=args.batch_size, compare=args.compare,
            max_samples=args.max_samples, family=args.family, max_new_tokens=args.max_new_tokens, on_bad_data=args.on_bad_data,
            generation=_generation(args.generation), confidence=args.confidence, allow_overlap=args.allow_overlap, endpoint=endpoint,
        )
    except KeyboardInterrupt:
        if endpoint is None:
            raise
        print(f"\nvlmdet eval: interrupted; the answers received are kept in answers.jsonl under {args.out}: run the same command again "
              "to send only the missing images", file=sys.stderr)
        return 130
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    import json

    from vlmdet.metrics.cocofile import score_results_file

    print(json.dumps(score_results_file(args.gt, args.pred), indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from vlmdet.predict.run import run_predict

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    run_predict(args.model, args.images, classes=classes, phrase=args.phrase, out=args.out, batch_size=args.batch_size, family=args.family,
                generation=_generation(args.generation), confidence=args.confidence)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from vlmdet.commands import export

    export(args.model, args.out, merge=args.merge, dtype=args.dtype, push_to_hub=args.push_to_hub, overwrite=args.overwrite,
                 generation=_generation(args.generation))
    return 0


def _cmd_doctor(args: argparse.Namespace, extra: list[str]) -> int:
    from vlmdet.commands import doctor

    result = doctor(args.config, rl=args.rl, out=args.out, checks=args.checks.split(",") if args.checks else None,
                    overfit_steps=args.overfit_steps, overrides=extra)
    print(f"[vlmdet] {result.summary()}")
    return 0 if result.ok else 1


ACCELERATE_CONFIGS = ("ddp", "fsdp2", "zero2", "zero3")


def _launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="run in N processes: starts the launcher for you (GPUs: accelerate launch; CPU: torchrun, gloo)")
    p.add_argument("--accelerate-config", default=None, metavar="NAME_OR_FILE",
                   help=f"with --num-processes on GPUs: {', '.join(ACCELERATE_CONFIGS)} (configs/accelerate/) or an accelerate config file")


def launcher_command(command: str, rest: list[str], n: int, accelerate_config: str | None, gpu: bool | None = None) -> list[str]:
    """The command that runs ``vlmdet <command> <rest>`` in ``n`` processes.

    On GPUs ``accelerate launch`` (with one of vlmdet's accelerate configs, or the user's); on a
    CPU-only machine ``torchrun`` (accelerate launch --cpu starts one process: multi-CPU accelerate
    wants MPI), with DDP over gloo — FSDP and DeepSpeed configs are refused there."""
    from pathlib import Path

    import torch

    gpu = torch.cuda.is_available() if gpu is None else gpu
    config = accelerate_config
    if config in ACCELERATE_CONFIGS:
        config = str(Path(__file__).resolve().parent / "configs" / "accelerate" / f"{config}.yaml")
    if gpu:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
        head += ["--config_file", config] if config else ["--multi_gpu"]
        return [*head, "-m", "vlmdet", command, *rest]
    text = Path(config).read_text().lower() if config else ""
    if "deepspeed" in text or "fsdp" in text:
        # accelerate turns FSDP and DeepSpeed on only for GPU-type devices: on CPU processes the run
        # would quietly train unsharded, so say so instead
        raise ValueError(f"{accelerate_config} needs GPUs (accelerate shards only on GPU-type devices) and this machine has none: "
                         "leave out --accelerate-config (or use ddp) to run the processes on CPU")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "vlmdet", command, *rest]


def _relaunch(args: argparse.Namespace, argv: list[str]) -> int | None:
    """``--num-processes N`` (N > 1) outside a launcher: run this same command under one; else None."""
    from vlmdet.distributed import launched

    n = getattr(args, "num_processes", 1) or 1
    if n <= 1 or launched():
        return None
    rest, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item in ("--num-processes", "--accelerate-config"):
            skip = True
            continue
        if item.startswith(("--num-processes=", "--accelerate-config=")) or item == args.command and i == 0:
            continue
        rest.append(item)
    import subprocess

    cmd = launcher_command(args.command, rest, n, args.accelerate_config)
    print(f"[vlmdet] {args.num_processes} processes: {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd)


def _decoding_args(p: argparse.ArgumentParser) -> None:
    from vlmdet.config import CONFIDENCE_KINDS

    p.add_argument("--generation", action="append", metavar="KEY=VALUE", help="any GenerationConfig setting over vlmdet's greedy decoding "
                   "(every penalty and n-gram ban off, whatever the checkpoint's generation_config.json says); repeatable")
    p.add_argument("--confidence", choices=CONFIDENCE_KINDS, default="geometric_mean", help="a box's confidence from its tokens' probabilities")


def build_parser() -> argparse.ArgumentParser:
    from vlmdet import __version__
    from vlmdet.families import FAMILIES

    parser = argparse.ArgumentParser(prog="vlmdet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vlmdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tiny-model", help="write an offline tiny model (real transformers classes, random weights)")
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--out", default=None, help="output folder (required without --pretrain)")
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--classes", default=None, help="comma-separated class names to include in the tokenizer corpus")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--pretrain", action="store_true",
                   help="pre-train it on generated scenes (tiny-pretrained:<family>, kept in the cache folder; --out copies it)")
    p.add_argument("set", nargs="*", metavar="KEY=VALUE", help="with --pretrain: pretrain.<PretrainRecipe field>=... or tiny.<TinySpec field>=...")
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser(
        "train",
        help="fine-tune with TRL (no arguments: the offline demo)",
        description="Fine-tune a VLM for detection. Settings: --config FILE.yaml plus key=value or --key value "
        "overrides (any vlmdet setting, SFTConfig field or LoraConfig field; dotted keys like sft.learning_rate=1e-4). "
        "With no arguments at all, runs the offline demo.",
    )
    p.add_argument("--config", default=None, help="YAML config (see configs/demo.yaml); 'demo' is the offline demo's")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint (same settings, same data)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in output_dir")
    _launch_args(p)
    p.set_defaults(func=_cmd_train, wants_extra=True)

    p = sub.add_parser(
        "rl",
        help="reinforcement learning with detection rewards (TRL GRPO) from a fine-tuned checkpoint (no arguments: the offline RL demo)",
        description="GRPO with vlmdet's detection rewards. Settings: --config FILE.yaml plus key=value overrides (any vlmdet setting, "
        "any GRPOConfig field, e.g. num_generations=8 or grpo.learning_rate=1e-5; rewards.f1=1.0 ...). With no arguments, runs the RL demo.",
    )
    p.add_argument("--config", default=None, help="YAML config (see configs/rl_demo.yaml); 'demo' is the RL demo's")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint (same settings, same data)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in output_dir")
    _launch_args(p)
    p.set_defaults(func=_cmd_rl, wants_extra=True)

    p = sub.add_parser("eval", help="score a model on a dataset split: COCO mAP, IoU, parse failures, report + images")
    p.add_argument("--model", default=None, help="trained vlmdet folder, adapter folder, base model folder or hub id; with --endpoint: the "
                   "exported folder the server serves (its prompt, classes, processor resize and end tokens)")
    p.add_argument("--data", required=True, action="append", help="dataset spec (COCO json, split folder, data.yaml, VOC folder, .csv, "
                   "Label Studio .json, .jsonl, hf:<id>); repeat it to score several datasets and their mean")
    p.add_argument("--split", default="val", help="split to score (val also finds valid/validation); a dataset without one is split "
                   "as the model's training run split it")
    p.add_argument("--allow-overlap", action="store_true", help="score images that also trained the model, on purpose")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--compare", default=None, help="a second model to evaluate on the same split, side by side")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--family", default=None, help="override the family read from the model config")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--on-bad-data", choices=["raise", "skip"], default="raise")
    g = p.add_argument_group("a served model (OpenAI-compatible chat completions: vLLM, SGLang, TGI, transformers serve, a hosted API)")
    g.add_argument("--endpoint", default=None, metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000/v1 (scored in place of "
                   "loading --model; answers cached in OUT/answers.jsonl, so a rerun sends only missing images)")
    g.add_argument("--served-model", default=None, metavar="NAME", help="the model name the server serves (the request's `model`)")
    g.add_argument("--processor", default=None, metavar="ID", help="without --model: a folder or hub id whose processor config tells the "
                   "server's image resize (needed for Qwen2.5-VL, which answers in resized pixels)")
    g.add_argument("--api-key-env", default=None, metavar="VAR", help="environment variable holding the API key (sent as a bearer token)")
    g.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    g.add_argument("--request-timeout", type=float, default=120.0, metavar="S", help="seconds per request before it is retried (default 120)")
    g.add_argument("--max-retries", type=int, default=4, help="retries per request, with exponential backoff, on 408/429/5xx, "
                   "connection errors and timeouts (default 4)")
    _decoding_args(p)
    _launch_args(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("metrics", help="score a COCO results file against COCO ground truth (pycocotools)")
    p.add_argument("--gt", required=True, help="COCO annotations.json")
    p.add_argument("--pred", required=True, help='COCO results: [{"image_id", "category_id", "bbox", "score"}]')
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("predict", help="detect on images: boxes as JSON (original pixels) + annotated images")
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--classes", default=None, help="comma-separated classes to detect (default: the model's)")
    p.add_argument("--phrase", default=None, help="ground this phrase instead of detecting classes")
    p.add_argument("--out", default="runs/predict")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--family", default=None)
    _decoding_args(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="a run folder as a plain model folder (LoRA merged) that transformers and inference servers load")
    p.add_argument("--model", required=True, help="the run folder (vlmdet train / vlmdet rl output)")
    p.add_argument("--out", required=True, help="the folder to write (must be new or empty, unless --overwrite)")
    p.add_argument("--merge", action="store_true", help="merge a LoRA run's adapters into the base weights (required for LoRA runs)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16", help="dtype of the saved weights (default bfloat16)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this hub repo (one commit)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds files")
    p.add_argument("--generation", action="append", metavar="KEY=VALUE",
                   help="a GenerationConfig setting over vlmdet's greedy decoding, written to generation_config.json; repeatable")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("doctor", help="check labels, coordinates, gradients and overfitting for a train config (--rl: the rewards of an rl config)")
    p.add_argument("--config", default=None, help="the train config (default with no overrides: the demo's, --config demo)")
    p.add_argument("--out", default=None, help="where to write the HTML/PNG evidence (default: <output_dir>/doctor)")
    p.add_argument("--checks", default=None, help="comma-separated subset of labels,coordinates,gradients,overfit,rewards")
    p.add_argument("--rl", action="store_true", help="the config is a `vlmdet rl` one: checks coordinates, gradients and the rewards")
    p.add_argument("--overfit-steps", type=int, default=300, help="most steps the overfit check trains its two images (checked every 50)")
    p.set_defaults(func=_cmd_doctor, wants_extra=True)

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

    def data_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--data", required=True, help="dataset spec, as train/eval take it (see the README's table)")
        s.add_argument("--val-fraction", type=float, default=0.2, help="a dataset without an evaluation split: the share held out for val, as train does")
        s.add_argument("--test-fraction", type=float, default=0.0)
        s.add_argument("--seed", type=int, default=0, help="seed of that split (train uses its own seed setting)")
        s.add_argument("--on-bad-data", choices=["raise", "skip"], default="raise")

    s = dsub.add_parser("stats", help="images, boxes per class and per image, sizes, bad boxes; with --model/--family the tokens a model is fed")
    data_args(s)
    s.add_argument("--model", default=None, help="a model folder or hub id: measure target, image and sequence tokens")
    s.add_argument("--family", default=None, help="without --model: measure with that family's offline tiny model's processor")
    s.add_argument("--max-pixels", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s.set_defaults(func=_cmd_data_stats)
    s = dsub.add_parser("convert", help="write the dataset as COCO, YOLO or JSONL (images copied byte for byte)")
    data_args(s)
    s.add_argument("--to", required=True, choices=["coco", "yolo", "jsonl"])
    s.add_argument("--out", required=True)
    s.set_defaults(func=_cmd_data_convert)
    s = dsub.add_parser("show", help="a contact sheet of images with their boxes drawn, as the model will be taught")
    data_args(s)
    s.add_argument("--split", default="train")
    s.add_argument("--n", type=int, default=16, help="how many images")
    s.add_argument("--out", default="data_show.png")
    s.set_defaults(func=_cmd_data_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "wants_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        relaunched = _relaunch(args, list(argv if argv is not None else sys.argv[1:]))
        if relaunched is not None:
            return relaunched
        if getattr(args, "wants_extra", False):
            return int(args.func(args, extra) or 0)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:  # user errors: one clear line, no traceback
        if os.environ.get("VLMDET_DEBUG"):
            raise
        print(f"vlmdet {args.command}: error: {exc} (VLMDET_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nvlmdet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
