"""The doctor checks, each with a verdict, the likely cause and the fix.

1. labels      — one batch token by token: only the target text and its end-of-turn token may be
                 trained; image tokens must match the image features.
2. coordinates — the training target, decoded the way inference decodes it, must land on the
                 ground-truth boxes within one quantisation step; drawn on the image as the model
                 sees it (after resize) and on the original.
3. gradients   — one optimizer step, then a second backward: every trainable parameter must get a
                 finite, non-zero gradient (LoRA B starts at zero, so A only gets gradient after
                 the first step — hence two).
4. overfit     — up to 300 steps on one batch of two images (at one input size): the loss must drop and greedy decoding must
                 reproduce the target boxes.

Eve
5. rewards     — (``vlmdet rl`` configs) the rewards through GRPO's path (token ids -> decode ->
                 score): the ground-truth answer must score highest of a set of well-formed answers
                 (empty, whole image, one box missed, one extra, repeated, shifted), the empty one lowest.rything is built exactly as ``vlmdet train`` builds it (same config, loader, trainable setup,
collator, prompts and codec), so a pass here means the training run gets the same pieces.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmdet.config import RunConfig
from vlmdet.models.processing import image_feature_token_id


@dataclass
class CheckResult:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)
    cause: str = ""
    fix: str = ""
    files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"[{'PASS' if self.ok else 'FAIL'}] {self.name}: {self.summary}"
        out = [head] + [f"    {d}" for d in self.details]
        if not self.ok:
            out += [f"    likely cause: {self.cause}", f"    fix: {self.fix}"]
        out += [f"    wrote {f}" for f in self.files]
        return out


@dataclass
class DoctorContext:
    cfg: RunConfig
    out: Path
    model_src: str
    family: Any
    processor: Any
    settings: Any
    samples: list[Any]
    images: dict[str, Any]
    pool: list[Any] = field(default_factory=list)  # more training samples, for checks that need a particular pair
    overfit_steps: int = 300


def overfit_pair(ctx: DoctorContext) -> tuple[list[Any], bool]:
    """Two samples with boxes and different targets that the model sees at the *same input size*.

    With variable-resolution processors (Qwen-VL) two images of different sizes get different
    numbers of image tokens, and a model that ignores the pixels can still tell them apart by the
    sequence alone; at one size only the pixels differ. Returns the pair and whether the sizes match.
    """
    from vlmdet.models.processing import model_input_wh

    candidates = [s for s in (ctx.samples + ctx.pool) if len(s.targets[1])]
    by_size: dict[tuple[int, int], Any] = {}
    for s in candidates:
        wh = model_input_wh(ctx.processor, s.image_wh)
        other = by_size.get(wh)
        if other is not None and ctx.settings.target(other) != ctx.settings.target(s):
            pair = [other, s]
            for x in pair:
                ctx.images.setdefault(x.id, x.load_image())
            return pair, True
        by_size.setdefault(wh, s)
    return (candidates[:2] or ctx.samples[:2]), False


def _load_model(ctx: DoctorContext):
    from vlmdet.models.loading import load_model
    from vlmdet.train.model import setup_trainable

    model, _, _ = load_model(ctx.model_src, ctx.family.name, quantize_4bit=ctx.cfg.finetune == "qlora")
    return setup_trainable(model, ctx.family, ctx.cfg)


def _collator(ctx: DoctorContext, model: Any = None):
    from vlmdet.models.loading import model_dtype
    from vlmdet.train.collator import DetectionCollator

    dtype = model_dtype(model) if model is not None else torch.float32
    return DetectionCollator(ctx.processor, dtype=dtype, completion_only=getattr(ctx.cfg, "labels", "completion") == "completion", layout=ctx.family.answer_layout)


def _rows(ctx: DoctorContext, samples: list[Any]) -> list[dict[str, Any]]:
    return [ctx.settings.row(s, ctx.images[s.id]) | {"id": s.source or s.id} for s in samples]


def expected_completion(ctx: DoctorContext, sample: Any) -> str:
    """The completion text the chat template appends after the prompt: target + end-of-turn tokens.

    Without a chat template (PaliGemma's prefix/suffix) the suffix is the target plus ``<eos>``.
    """
    tok = ctx.processor.tokenizer
    if ctx.family.answer_layout == "seq2seq":  # decoder labels: <s> target </s>
        return tok.bos_token + ctx.settings.target(sample) + tok.eos_token
    if ctx.family.answer_layout == "prefix_suffix":
        return ctx.settings.target(sample) + tok.eos_token
    tpl = ctx.processor.apply_chat_template
    row = ctx.settings.row(sample, ctx.images[sample.id])
    prompt = tpl(row["prompt"], add_generation_prompt=True)
    full = tpl(row["prompt"] + row["completion"])
    if not full.startswith(prompt):
        return ctx.settings.target(sample)
    return full[len(prompt) :]


# ---------------------------------------------------------------- 1. labels
def check_labels(ctx: DoctorContext) -> CheckResult:
    from rich.console import Console
    from rich.text import Text

    tok = ctx.processor.tokenizer
    samples = ctx.samples[:2]
    try:
        batch = _collator(ctx)(_rows(ctx, samples))
    except ValueError as exc:
        return CheckResult("labels", False, "the collator refused the batch", [str(exc)], "image tokens and image features disagree (truncation or a processor/model mismatch)", "never truncate (max_length: null); load processor and model from the same folder")
    image_id = image_feature_token_id(ctx.processor)
    problems, pages = [], []
    console = Console(highlight=False)
    seq2seq = ctx.family.answer_layout == "seq2seq"
    for i, s in enumerate(samples):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        if seq2seq:  # the prompt is the encoder's input; what can be trained is the decoder sequence
            ids, mask = labels.clamp(min=0), (labels != -100).long()
        trained = labels != -100
        got = tok.decode(labels[trained]) if trained.any() else ""
        want = expected_completion(ctx, s)
        if got != want:
            extra = "" if not got.endswith(want) else f" (also trained: {got[: len(got) - len(want)][-80:]!r})"
            problems.append(f"{s.source or s.id}: trained text differs from the target + end token{extra}")
        if image_id is not None and trained[ids == image_id].any():
            problems.append(f"{s.source or s.id}: {int(trained[ids == image_id].sum())} image tokens are trained")
        if trained[mask == 0].any():
            problems.append(f"{s.source or s.id}: padding tokens are trained")
        # token-by-token view: trained tokens on green; runs of image tokens collapsed
        text, page, run = Text(), [], 0
        pieces = tok.convert_ids_to_tokens(ids[mask == 1].tolist())
        flags = trained[mask == 1].tolist()
        words = [tok.convert_tokens_to_string([p]) for p in pieces]
        for j, (piece, word, on) in enumerate(zip(pieces, words, flags)):
            is_img = image_id is not None and piece == tok.convert_ids_to_tokens(image_id)
            if is_img:
                run += 1
                nxt = j + 1 < len(pieces) and pieces[j + 1] == piece
                if nxt:
                    continue
                word, run = f"<image x{run}>", 0
            style = "black on green" if on else "dim"
            text.append(word.replace("\n", "\\n\n"), style=style)
            page.append(f'<span class="{"t" if on else "p"}">{html.escape(word)}</span>')
        console.print(Text(f"--- sample {s.source or s.id} (trained tokens highlighted)", style="bold"))
        console.print(text)
        pages.append(f"<h3>{html.escape(s.source or s.id)}</h3><pre>{''.join(page)}</pre>")
    path = ctx.out / "doctor_labels.html"
    path.write_text(
        "<html><head><style>.t{background:#7f7;font-weight:bold}.p{color:#888}pre{white-space:pre-wrap}</style></head><body>"
        "<p>Green: trained tokens (labels). Grey: masked (-100).</p>" + "".join(pages) + "</body></html>"
    )
    n_trained = int((batch["labels"] != -100).sum())
    return CheckResult(
        "labels",
        not problems,
        f"{n_trained} trained tokens in {len(samples)} samples" + ("; only target + end token trained" if not problems else ""),
        problems,
        "the collator trains the prompt / image tokens (labels over the whole sequence) or masks the target",
        "use completion-only labels (vlmdet's default `labels: completion`; TRL's completion_only_loss=True)",
        [str(path)],
    )


# ---------------------------------------------------------------- 2. coordinates
def check_coordinates(ctx: DoctorContext) -> CheckResult:
    from vlmdet.models.processing import model_input_wh
    from vlmdet.report.draw import draw_boxes
    from vlmdet.rows import canonical_order

    codec = ctx.settings.codec
    problems, files, worst = [], [], 0.0
    for k, s in enumerate(ctx.samples[:3]):
        target = ctx.settings.target(s)
        gt_boxes, gt_labels = canonical_order(*s.targets)
        decoded = codec.decode(target, s.image_wh)
        sx, sy = codec.step(s.image_wh)
        if decoded.labels != list(gt_labels) or decoded.boxes.shape != gt_boxes.shape:
            problems.append(f"{s.source or s.id}: decoding the target gives {len(decoded.boxes)} boxes {decoded.labels}, the annotation has {len(gt_boxes)} {list(gt_labels)}")
        elif len(gt_boxes):
            err = np.abs(decoded.boxes - gt_boxes) / np.array([sx, sy, sx, sy])
            worst = max(worst, float(err.max()))
            if err.max() > 1.0 + 1e-6:
                problems.append(f"{s.source or s.id}: the target moves a box by {err.max():.1f} quantisation steps ({np.abs(decoded.boxes - gt_boxes).max():.1f} px)")
        image = ctx.images[s.id]
        mw, mh = model_input_wh(ctx.processor, s.image_wh)
        seen = codec.decode(target, (mw, mh))
        a = draw_boxes(image.resize((mw, mh)), seen.boxes, seen.labels, (230, 30, 30))
        b = draw_boxes(draw_boxes(image, gt_boxes, gt_labels, (0, 200, 0)), decoded.boxes, decoded.labels, (230, 30, 30))
        for name, img in ((f"doctor_coords_{k}_model_view_{mw}x{mh}.png", a), (f"doctor_coords_{k}_original.png", b)):
            img.save(ctx.out / name)
            files.append(str(ctx.out / name))
    return CheckResult(
        "coordinates",
        not problems,
        f"target round trip within {worst:.2f} quantisation steps" if not problems else "the targets do not decode back onto the boxes",
        problems + [f"codec {codec.name} {ctx.settings.codec_settings}; red = target as decoded, green = annotation"],
        "targets written in the wrong coordinate space (e.g. original pixels for Qwen2.5-VL, which answers in smart-resized pixels)",
        "write targets with the family codec built from the model's own processor (vlmdet's default target_space: model)",
        files,
    )


# ---------------------------------------------------------------- 3. gradients
def check_gradients(ctx: DoctorContext) -> CheckResult:
    from peft import PeftModel

    from vlmdet.train.callbacks import GradNormCallback
    from vlmdet.train.model import trainable_summary

    cfg = ctx.cfg
    model = _load_model(ctx)
    counts = trainable_summary(model, ctx.family)
    if cfg.finetune in ("lora", "qlora") and counts["adapters"] == 0:
        return CheckResult("gradients", False, "LoRA run but no adapter parameter is trainable", [f"trainable: {counts}"], "the adapters are frozen", "do not freeze lora_ parameters; let get_peft_model mark them trainable")
    gc = cfg.trainer_args.get("gradient_checkpointing", True)
    gc_kwargs = cfg.trainer_args.get("gradient_checkpointing_kwargs") or {"use_reentrant": False}
    frozen = [n for n, p in model.named_parameters() if "lora_" in n and not p.requires_grad]
    if frozen:
        return CheckResult(
            "gradients", False, f"{len(frozen)} LoRA parameters are frozen", [f"frozen: {n}" for n in frozen[:8]] + [f"trainable: {counts}"],
            "the adapters were frozen after get_peft_model (a blanket requires_grad_(False) or a freeze-by-name that caught lora_ weights)",
            "freeze base weights before adding adapters, or unfreeze every lora_ parameter",
        )
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if isinstance(model, PeftModel):
            model.enable_input_require_grads()  # as TRL's SFTTrainer does for PEFT + checkpointing
    model.train()
    batch = _collator(ctx, model)(_rows(ctx, ctx.samples[:2]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss = model(**batch).loss
    if loss.requires_grad:  # else nothing trainable is connected to the loss: every grad stays None
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
    loss = loss.item()
    norms, bad = GradNormCallback(ctx.family).measure(model)
    details = [f"loss {loss:.4f}; gradient checkpointing {'on ' + str(gc_kwargs) if gc else 'off'}",
               "grad norm by group: " + ", ".join(f"{g} {v:.3g}" for g, v in norms.items() if counts[g])]
    failing = [(kind, n) for kind in ("none", "zero", "nonfinite") for n in bad[kind]]
    for kind, name in failing[:12]:
        details.append(f"{kind:>9}: {name}")
    if len(failing) > 12:
        details.append(f"... and {len(failing) - 12} more")
    cause = "trainable parameters get no gradient: "
    if bad["none"]:
        cause += "they are cut off from the loss — typically reentrant gradient checkpointing with a frozen input (vision tower or embeddings)"
    elif bad["nonfinite"]:
        cause += "non-finite values: fp16 overflow or a learning rate too high"
    else:
        cause += "the loss does not depend on them (all labels masked, or a frozen block in between)"
    return CheckResult(
        "gradients",
        not failing and math.isfinite(loss),
        f"{counts['total']:,} trainable parameters, all with finite non-zero gradients" if not failing else f"{len(failing)} trainable parameters without a usable gradient",
        details,
        cause,
        "gradient_checkpointing_kwargs: {use_reentrant: false} (vlmdet's default); check that LoRA targets modules the forward uses",
    )


# ---------------------------------------------------------------- 4. overfit
def check_overfit(ctx: DoctorContext, max_steps: int | None = None, check_every: int = 50, lr: float | None = None) -> CheckResult:
    """Train on one batch of two images until greedy decoding reproduces both (at most ``max_steps``,
    default ``ctx.overfit_steps``).

    Two different images in the batch make the check fail when the model ignores the image: it
    can then only write one memorised answer for both.
    """
    from vlmdet.metrics import box_iou
    from vlmdet.predict import Predictor
    from vlmdet.rows import canonical_order

    max_steps = max_steps or ctx.overfit_steps
    model = _load_model(ctx)
    samples, same_size = overfit_pair(ctx)
    batch = _collator(ctx, model)(_rows(ctx, samples))
    # A bit above the run's own rate: memorising one batch should be easy at the rate the run uses.
    lr = lr or float(ctx.cfg.trainer_args.get("learning_rate", 2e-4)) * 2.5
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses: list[float] = []
    misses: list[str] = []
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % check_every and step != max_steps:
            continue
        preds = Predictor(model, ctx.processor, ctx.settings, batch_size=len(samples)).predict(samples, ctx.images)
        misses = []
        for s, p in zip(samples, preds):
            gt_boxes, gt_labels = canonical_order(*s.targets)
            iou = box_iou(p.boxes, gt_boxes)
            ok = p.labels == list(gt_labels) and (len(gt_boxes) == 0 or (len(p.boxes) == len(gt_boxes) and np.diag(iou).min() >= 0.5))
            if not ok:
                misses.append(f"{s.source or s.id}: wanted {ctx.settings.target(s)!r}, got {p.text[:200]!r}")
        if not misses and losses[-1] < 0.3 * losses[0]:
            break
    dropped = losses[-1] < 0.3 * losses[0]
    note = [] if same_size else ["note: no two training images share one input size, so the model could tell these two apart by their token count alone"]
    note.append(_against_baseline(ctx, samples, preds))
    return CheckResult(
        "overfit",
        dropped and not misses,
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps (lr {lr:g}); "
        f"{len(samples) - len(misses)}/{len(samples)} answers reproduce the boxes",
        misses + note,
        "the model cannot learn even one batch: labels, coordinates or gradients are broken (see the checks above), "
        "the learning rate is far off, or (same answer for both images) the image does not reach the language model",
        "fix the failing checks above first; then try a higher learning rate for this check",
    )


def _against_baseline(ctx: DoctorContext, samples: list[Any], preds: list[Any]) -> str:
    """One line: the overfit model's F1@0.5 on its two images against the image-blind mean box fitted
    on the training pool (:mod:`vlmdet.metrics.baselines`) — a model that only writes the average
    answer cannot beat it."""
    from vlmdet.metrics import DetectionMetrics
    from vlmdet.metrics.baselines import mean_box_baseline, score_constant

    classes = None if ctx.settings.task == "ground" else list(ctx.settings.classes)
    base = score_constant(mean_box_baseline(ctx.pool or samples, classes), samples, classes)
    metrics = DetectionMetrics(classes)
    for s, p in zip(samples, preds):
        metrics.update(s.image_wh, s.boxes, s.labels, p.boxes, p.labels, iscrowd=s.ignored)
    model = metrics.compute()
    line = f"against the image-blind mean box (fitted on {len(ctx.pool or samples)} training images): F1@0.5 {model.f1_50:.2f} vs {base.f1_50:.2f}"
    if base.f1_50 >= 1.0:
        line += " — these two images share one layout, so this pair cannot tell looking from guessing"
    elif model.f1_50 <= base.f1_50:
        line += " — the model does not beat a box that ignores the image"
    return line


# ---------------------------------------------------------------- 5. rewards (RL)
def reward_alternatives(ctx: DoctorContext, sample: Any) -> dict[str, str]:
    """Well-formed answers for ``sample`` in the family's format: the ground truth and worse ones."""
    from vlmdet.rows import canonical_order

    boxes, labels = canonical_order(*sample.targets)
    w, h = sample.image_wh
    enc = ctx.settings.codec.encode
    small = np.array([[0.0, 0.0, w * 0.08, h * 0.08]])
    return {
        "ground truth": enc(boxes, labels, sample.image_wh),
        "empty": enc(np.zeros((0, 4)), [], sample.image_wh),
        "whole image": enc(np.array([[0.0, 0.0, w, h]]), labels[:1], sample.image_wh),
        "one box missed": enc(boxes[:-1], labels[:-1], sample.image_wh),
        "one extra box": enc(np.vstack([boxes, small]), list(labels) + labels[:1], sample.image_wh),
        "every box repeated": enc(np.vstack([boxes, boxes]), list(labels) * 2, sample.image_wh),
        "boxes shifted": enc(np.clip(boxes + [w * 0.15, h * 0.15, w * 0.15, h * 0.15], 0, [w, h, w, h]), labels, sample.image_wh),
        "image-blind mean box": enc(*_mean_box(ctx).predict(sample.image_wh), sample.image_wh),
    }


def _mean_box(ctx: DoctorContext) -> Any:
    """The image-blind mean-box baseline of the training pool, fitted once per doctor run."""
    from vlmdet.metrics.baselines import mean_box_baseline

    if not hasattr(ctx, "_mean_box"):
        ctx._mean_box = mean_box_baseline(ctx.pool or ctx.samples, None if ctx.settings.task == "ground" else list(ctx.settings.classes))
    return ctx._mean_box


def check_rewards(ctx: DoctorContext) -> CheckResult:
    """The RL rewards, through the path GRPO uses (token ids -> decode -> score): on every sample the
    ground-truth answer must score highest of a set of well-formed answers — the image-blind mean box
    among them — and the empty one lowest."""
    from vlmdet.rewards import DEFAULT_WEIGHTS, reward_functions

    weights = {**DEFAULT_WEIGHTS, **(getattr(ctx.cfg, "rewards", None) or {})}
    samples = [s for s in ctx.samples if len(s.targets[1])] or ctx.samples
    tok = ctx.processor.tokenizer
    end_ids = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
    funcs, fweights = reward_functions(samples, ctx.settings, tok, end_ids, weights)
    problems, details = [], []
    for i, s in enumerate(samples):
        answers = reward_alternatives(ctx, s)
        ids = [tok(text, add_special_tokens=False)["input_ids"] for text in answers.values()]
        totals = dict.fromkeys(answers, 0.0)
        for f, w in zip(funcs, fweights):
            for name, r in zip(answers, f(completion_ids=ids, sample_index=[i] * len(ids))):
                totals[name] += w * r
        best, worst = max(totals, key=totals.get), min(totals, key=totals.get)
        details.append(f"{s.source or s.id}: " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))
        if any(v >= totals["ground truth"] for k, v in totals.items() if k != "ground truth"):
            problems.append(f"{s.source or s.id}: '{best}' scores {totals[best]:.3f}, the ground truth {totals['ground truth']:.3f}")
        if any(v < totals["empty"] for k, v in totals.items() if k not in ("empty", "image-blind mean box")):
            problems.append(f"{s.source or s.id}: '{worst}' scores {totals[worst]:.3f}, below the empty answer's {totals['empty']:.3f}")
    return CheckResult(
        "rewards",
        not problems,
        f"the ground truth scores highest and the empty answer lowest on {len(samples)} samples (weights {weights})" if not problems
        else f"{len(problems)} ranking problems in {len(samples)} samples",
        problems + details,
        "the reward weights reward a worse answer (a negative weight on f1 / soft_iou / format, or penalties weighted negative), or the "
        "rewards read answers in another coordinate space or format than the targets are written in",
        "keep every reward weight >= 0 (vlmdet's defaults: rewards.f1=1 soft_iou=1 format=0.5 duplicates=0.5 count=0.5)",
    )


CHECKS = {"labels": check_labels, "coordinates": check_coordinates, "gradients": check_gradients, "overfit": check_overfit, "rewards": check_rewards}
DEFAULT_CHECKS = ("labels", "coordinates", "gradients", "overfit")
RL_CHECKS = ("coordinates", "gradients", "rewards")


def run_doctor(cfg: RunConfig, out_dir: str | Path | None = None, checks: list[str] | None = None, n_samples: int = 4, overfit_steps: int = 300) -> list[CheckResult]:
    """Run the checks for ``cfg`` (the same config ``vlmdet train`` takes); returns one result per check.

    The run is prepared by :func:`vlmdet.run.prepare_run`, exactly as ``vlmdet train`` prepares it
    (without touching the run folder's state or loading weights: each check loads its own model).
    """
    from vlmdet.run import prepare_run

    unknown = [c for c in checks or [] if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown doctor check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    cfg.eval_split = ""
    run = prepare_run(cfg, "vlmdet doctor", load_weights=False, training=False)
    out = Path(out_dir or run.out / "doctor")
    out.mkdir(parents=True, exist_ok=True)
    samples = sorted(run.train.samples[:64], key=lambda s: -len(s.boxes))[:n_samples]
    ctx = DoctorContext(cfg, out, run.model_src, run.family, run.processor, run.settings, samples, {s.id: s.load_image() for s in samples},
                        pool=run.train.samples[:256], overfit_steps=overfit_steps)
    results = []
    for name in checks or list(RL_CHECKS if getattr(cfg, "trainer_section", "") == "grpo" else DEFAULT_CHECKS):
        torch.manual_seed(cfg.seed)
        results.append(CHECKS[name](ctx))
        for line in results[-1].lines():
            print(line, flush=True)
    return results
