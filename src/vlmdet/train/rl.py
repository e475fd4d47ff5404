"""``vlmdet rl``: reinforcement learning with detection rewards (TRL's GRPO), top to bottom.

1. prepare — :func:`vlmdet.run.prepare_run`, as ``vlmdet train`` prepares a run: the starting
             checkpoint (typically a ``vlmdet train`` output; a LoRA adapter is merged into its base
             first) keeps the prompts it was trained with
2. model   — choose what trains (full, or fresh LoRA adapters on the starting checkpoint)
3. before  — score the starting checkpoint on the eval split (the "before" column)
4. train   — TRL ``GRPOTrainer``: for each training image a group of sampled answers, each scored
             by the rewards of :mod:`vlmdet.rewards` against that image's boxes; detection metrics
             on the eval split every ``eval_steps``; time split into generation / rewards / update
5. after   — score the result with the same decoding; save; report (json, md, html)

Encoder-decoder families (Florence-2) are refused: TRL's GRPOTrainer generates and scores
decoder-only models (prompt and completion in one sequence), while Florence-2 answers in its decoder.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from vlmdet.run import BEFORE_FILE, log
from vlmdet.train.rl_config import RLConfig
from vlmdet.train.recipe import TrainResult

# The chat template that turns PaliGemma's prefix into TRL's conversational prompts: the image
# placeholder, then the prompt text — the processor adds <bos> and the newline itself, so the prompt
# tokens are exactly those of the prefix/suffix path (tested).
PREFIX_CHAT_TEMPLATE = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


def rollout_generation_kwargs() -> dict[str, Any]:
    """Every penalty and n-gram ban off for the rollouts: TRL sets sampling (temperature, top-p/k,
    repetition penalty), and everything it leaves unset would otherwise come from the checkpoint's
    ``generation_config.json``."""
    from vlmdet.predict.decoding import GREEDY

    sampling = {"do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams", "num_return_sequences"}
    return {k: v for k, v in GREEDY.items() if k not in sampling and k != "use_cache"}


def rl(cfg: RLConfig, extra_callbacks: list[Any] | None = None) -> TrainResult:
    """Run the recipe (see the module docstring)."""
    from transformers import set_seed

    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.predict.decoding import Decoding
    from vlmdet.report import print_table, run_columns, write_report
    from vlmdet.run import run_baselines
    from vlmdet.report.html import gallery_items
    from vlmdet.rewards import DEFAULT_WEIGHTS, reward_functions
    from vlmdet.rows import PromptSource, RowSource
    from vlmdet.distributed import is_main_process
    from vlmdet.run import prepare_run
    from vlmdet.train.callbacks import ConsoleCallback, DetectionEvalCallback, GradNormCallback, TimeLimitCallback, quiet_progress
    from vlmdet.train.model import setup_trainable, trainable_summary
    from vlmdet.train.recipe import image_cache
    from vlmdet.train.trainer import DetectionGRPOTrainer

    set_seed(cfg.seed)
    main = is_main_process()  # the one process that writes files; all of them train and score
    # 1. prepare
    run = prepare_run(cfg, "vlmdet rl", merge_adapters=True)
    out, family, processor, settings = run.out, run.family, run.processor, run.settings
    if family.answer_layout == "seq2seq":
        raise ValueError(
            f"vlmdet rl: {family.name} is an encoder-decoder (its answer is the decoder's); TRL's GRPOTrainer generates and scores "
            "decoder-only models only. Fine-tune it with `vlmdet train`"
        )

    # 2. model
    model = setup_trainable(run.model, family, cfg)
    counts = trainable_summary(model, family)
    log(f"starting checkpoint {run.model_src} ({family.name}, {counts['all_params']:,} params); trainable: "
        + ", ".join(f"{g} {counts[g]:,}" for g in ("vision", "projector", "language", "adapters") if counts[g]))
    weights = {**DEFAULT_WEIGHTS, **cfg.rewards}
    log(f"task {settings.task}, codec {settings.codec.name}, {len(settings.classes)} classes; rewards {weights}")
    from vlmdet.train.rl_config import vllm_unavailable

    if not cfg.trainer_args.get("use_vllm"):
        why = vllm_unavailable()
        log("rollouts: transformers generate" + (f" (vLLM off: {why})" if why else " (vLLM available: grpo.use_vllm=true switches to it)"))
    cache = image_cache(cfg, processor)
    eval_rows = RowSource(run.eval.samples, settings, cache) if run.eval is not None and len(run.eval) else None
    det_samples = run.eval.samples[: cfg.eval.max_samples] if eval_rows is not None else []
    # Scored from the files, as `vlmdet eval` scores them (not from the training cache, whose images are
    # already shrunk by vlmdet rather than by the processor): the report's figures are eval's figures.
    det_images = None

    tokenizer = processor.tokenizer
    end_ids = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    end_ids |= {gen_eos} if isinstance(gen_eos, int) else set(gen_eos or [])
    reward_funcs, reward_weights = reward_functions(run.train.samples, settings, tokenizer, end_ids, weights)
    args = cfg.build_trainer_args(out, has_eval=False, max_completion_length=settings.max_new_tokens, reward_weights=reward_weights,
                                  generation_kwargs=rollout_generation_kwargs())
    decoding = Decoding(cfg.generation)
    eval_every = int(cfg.trainer_args.get("eval_steps") or max(1, args.max_steps // 4 if args.max_steps > 0 else 100))
    grad_cb = GradNormCallback(family, patience=cfg.grad_check_steps, stop_on_failure=cfg.stop_on_bad_grads)
    det_cb = DetectionEvalCallback(det_samples, settings, processor, batch_size=cfg.eval.batch_size, images=det_images, decoding=decoding,
                                   confidence=cfg.eval.confidence, every=eval_every)
    callbacks = [grad_cb, det_cb, ConsoleCallback(), *([TimeLimitCallback(cfg.max_seconds)] if cfg.max_seconds else []), *(extra_callbacks or [])]
    # TRL's processor: PaliGemma gets a template that renders its prefix from TRL's conversational
    # prompts. And left padding: TRL pads the prompt ids on the left but, to score completions,
    # runs the processor again with its own padding side — per-token fields such as Qwen-VL's
    # mm_token_type_ids must line up with the left-padded ids (with right padding Qwen3-VL's rope
    # index fails on prompts of different lengths).
    rl_processor = copy.deepcopy(processor)
    rl_processor.tokenizer.padding_side = "left"
    if family.answer_layout == "prefix_suffix":
        rl_processor.chat_template = PREFIX_CHAT_TEMPLATE
    trainer = DetectionGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=PromptSource(run.train.samples, settings, cache).dataset(),
        processing_class=rl_processor,
        callbacks=callbacks,
        family=family,
        group_lrs={"vision": cfg.lr_vision, "projector": cfg.lr_projector, "language": cfg.lr_language},
        answer_layout=family.answer_layout,
    )
    det_cb.attach(trainer)
    quiet_progress(trainer)
    run.folder.start(cfg, run.fingerprint, "grpo", run.resume_from)

    # 3. before: the starting checkpoint
    before, columns = None, {}
    before_path = out / BEFORE_FILE
    if run.resume_from and before_path.is_file():
        before = json.loads(before_path.read_text())
    elif cfg.eval.before and det_samples:
        log(f"scoring the starting checkpoint on {len(det_samples)} eval images (before)")
        preds = Predictor(trainer.model, processor, settings, batch_size=cfg.eval.batch_size, decoding=decoding, confidence=cfg.eval.confidence).predict(
            det_samples, det_images, progress=True, desc="before")
        columns["starting checkpoint"] = preds
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
        columns["after GRPO"] = preds
        after = evaluate_predictions(det_samples, preds, settings, cfg.eval.confidence).to_dict()
    timings = [e for e in trainer.state.log_history if "time/generation_s" in e]
    meta = {
        "model": run.model_src, "family": family.name, "data": run.data_src, "eval_split": cfg.eval_split, "eval_images": len(det_samples),
        "method": "grpo", "steps": trainer.state.global_step, "train_seconds": train_seconds, "finetune": cfg.finetune, "trainable": counts,
        "rewards": weights, "grad_problems": grad_cb.problems, "decoding": decoding.record(), "confidence": cfg.eval.confidence,
        "seconds_per_step": {k: sum(e[k] for e in timings) / len(timings) for k in ("time/generation_s", "time/rewards_s", "time/update_s", "time/step_s")} if timings else {},
        "before_name": "starting checkpoint", "after_name": "after GRPO", "verdict_names": ["the GRPO model", "the starting checkpoint"],
    }
    baselines = run_baselines(run, det_samples) if main and (before is not None or after is not None) else None
    gallery = gallery_items(det_samples, columns) if baselines is not None else []
    if baselines is not None:
        write_report(out, before, after, meta, gallery=gallery, log_history=trainer.state.log_history, baselines=baselines)
        print_table(run_columns(before, after, meta, baselines), title=f"{family.name} GRPO on {cfg.eval_split} ({len(det_samples)} images)")
    run.folder.finish(trainer.state.global_step)
    if main:  # vlmdet's card replaces TRL's generic README.md (base model, prompt, data, scores)
        from vlmdet.report.card import write_card

        write_card(out)
    log(f"saved model, processor and vlmdet.json to {out} ({trainer.state.global_step} steps, {train_seconds:.0f} s)")
    return TrainResult(out, before, after, trainer.state.global_step, train_seconds, trainer.state.log_history,
                       baselines.to_dict() if baselines is not None else None, gallery, title="vlmdet rl (GRPO)",
                       names=(meta["before_name"], meta["after_name"]), subject=meta["verdict_names"][0])


def compare_models(models: dict[str, str], data: str, split: str, out: Path, weights: dict[str, float], cfg: Any) -> dict[str, dict[str, Any]]:
    """Score several models on one split with the same decoding; each column adds the mean reward of
    its greedy answers. Writes ``out/report.md`` and ``out/report.html``; returns the columns."""
    from vlmdet.data.readers import ReadOptions, open_dataset
    from vlmdet.evaluate import evaluate_model
    from vlmdet.predict.decoding import Decoding
    from vlmdet.report import decoding_note, markdown_table, print_table
    from vlmdet.report.html import gallery_items, write_html
    from vlmdet.rewards import score_parts, total

    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data, split, ReadOptions(on_error=cfg.on_bad_data))
    if cfg.eval.max_samples:
        ds = ds.subset(range(min(cfg.eval.max_samples, len(ds))))
    decoding = Decoding(cfg.generation)
    columns, preds = {}, {}
    for name, model_dir in models.items():
        ev = evaluate_model(model_dir, ds, cfg.eval.batch_size, decoding=decoding, confidence=cfg.eval.confidence)
        rewards = [total(score_parts(p.decoded, *s.targets), weights) for s, p in zip(ds.samples, ev.predictions)]
        columns[name] = {**ev.result.to_dict(), "mean_reward": sum(rewards) / len(rewards)}
        preds[name] = ev.predictions
    meta = {"decoding": decoding.record(), "confidence": cfg.eval.confidence}
    title = f"SFT vs SFT+GRPO vs SFT continued: `{data}` split `{split}` ({len(ds)} images)"
    table = markdown_table(columns) + "\n| mean reward | " + " | ".join(f"{c['mean_reward']:.3f}" for c in columns.values()) + " |"
    (out / "report.md").write_text(f"# {title}\n\n{decoding_note(meta)}\n\n{table}\n")
    (out / "metrics.json").write_text(json.dumps({**{n: {**c, "model": models[n]} for n, c in columns.items()}, **meta}, indent=2))
    write_html(out / "report.html", title, columns, gallery=gallery_items(ds.samples, preds), settings={"models": models, **meta}, notes=[decoding_note(meta)])
    print_table(columns, title=title)
    return columns


def rl_demo(extra: list[str] | None = None) -> int:
    """``vlmdet rl`` with no arguments: ``configs/rl_demo.yaml``. Trains the SFT demo first when its
    model is missing, runs GRPO from it, continues the SFT run for the same wall time, and scores the
    three models side by side."""
    from vlmdet.rewards import DEFAULT_WEIGHTS
    from vlmdet.train.config import load_config as load_sft_config
    from vlmdet.train.recipe import train
    from vlmdet.train.rl_config import load_config

    cfg = load_config("demo", list(extra or []))
    sft_dir = Path(cfg.model)
    if not (sft_dir / "vlmdet.json").is_file():
        log(f"{sft_dir} holds no trained model: training the SFT demo first (vlmdet train, about 10 minutes on 2 CPU cores)")
        train(load_sft_config("demo", [f"output_dir={sft_dir}"]))
    result = rl(cfg)
    models = {"SFT (start)": str(sft_dir), "SFT + GRPO": str(cfg.output_dir)}
    if cfg.compare_sft_config:
        continued = Path(cfg.output_dir) / "sft-continued"
        log(f"baseline: the SFT run continued with SFT for GRPO's {result.train_seconds:.0f} s of training -> {continued}")
        sft = load_sft_config(cfg.compare_sft_config, [
            f"model={sft_dir}", f"data={cfg.data}", f"output_dir={continued}", "--overwrite", f"max_seconds={result.train_seconds:.1f}",
            "max_steps=1000000", "warmup_steps=0", "lr_scheduler_type=constant", f"learning_rate={cfg.trainer_args.get('learning_rate', 1e-4)}",
            "eval.before=false", "eval.after=false", "eval_strategy=no", "save_strategy=no",
        ])
        train(sft)
        models["SFT continued (same wall time)"] = str(continued)
    compare_models(models, cfg.data, cfg.eval_split or "val", Path(cfg.output_dir) / "comparison", {**DEFAULT_WEIGHTS, **cfg.rewards}, cfg)
    log(f"wrote the comparison to {Path(cfg.output_dir) / 'comparison'}/report.md and report.html")
    return 0
