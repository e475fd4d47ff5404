"""A tiny base that has seen images before: offline pre-training of the tiny models, cached.

Users fine-tune a pretrained VLM; ``tiny:<family>`` is random-init (right for tests: every byte of
behaviour comes from vlmdet's code). ``tiny-pretrained:<family>`` is the same tiny model after
:class:`PretrainRecipe`: a short, deterministic pre-training on generated scenes
(:mod:`vlmdet.data.scenes`: six shapes in eight named colours, textured backgrounds and clutter)
with three tasks that are not closed-set detection —

* *describe*: "Name the shapes in this image and their colours, from left to right." ->
  ``"a red star, a blue circle"`` (what a caption teaches: shapes by name, whatever their colour);
* *count*: "How many shapes are in this image?" -> ``"2"``;
* *locate*: "Outline the red shape." -> the family's own box format with the label ``"red shape"``
  (what referring-expression data teaches: boxes in the model's coordinate space).

The model is trained with TRL's ``SFTTrainer`` and TRL's prompt/completion collator
(completion-only loss), then scored on held-out scenes (exact descriptions, exact counts, mean IoU
of located boxes); the scores are saved beside the weights as ``pretrain.json``.

The result is cached under ``$VLMDET_CACHE`` (default ``$XDG_CACHE_HOME/vlmdet`` or
``~/.cache/vlmdet``) in ``tiny-pretrained/<family>-<key>``, the key hashing the family, the tiny
spec, the recipe, the code that draws and trains, and the torch/transformers/trl versions — so a
changed recipe or library builds again and an unchanged one is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmdet.families import TinySpec, get_family

PRETRAIN_FILE = "pretrain.json"
RECIPE_VERSION = 1  # bump when the recipe's meaning changes without a field changing

PROMPTS = {
    "describe": "Name the shapes in this image and their colours, from left to right.",
    "count": "How many shapes are in this image?",
    "locate": "Outline the {colour} shape.",
}


@dataclass(frozen=True)
class PretrainRecipe:
    """How ``tiny-pretrained:<family>`` is made. Every field enters the cache key.

    Attributes:
        steps / batch_size / learning_rate / warmup_steps: the SFT run (AdamW, cosine schedule).
        mix: the share of describe / count / locate rows.
        min_side / max_side / max_objects: the scenes drawn (:func:`vlmdet.data.scenes.render_scene`).
        max_pixels: the processor's image budget while pre-training (saved with the model).
        eval_scenes: held-out scenes scored after training (``pretrain.json``).
        seed: seeds the weights' initialisation order, the scenes and the trainer.
    """

    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    mix: tuple[float, float, float] = (0.4, 0.2, 0.4)
    min_side: int = 96
    max_side: int = 144
    max_objects: int = 3
    max_pixels: int = 7056
    eval_scenes: int = 96
    seed: int = 0


def cache_root() -> Path:
    """Where pre-trained tiny models are kept: ``$VLMDET_CACHE``, else the user's cache folder."""
    if os.environ.get("VLMDET_CACHE"):
        return Path(os.environ["VLMDET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vlmdet"


def _code_hash() -> str:
    from vlmdet.data import scenes, synth

    h = hashlib.sha256()
    for mod in (scenes, synth):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def cache_key(family: str, spec: TinySpec, recipe: PretrainRecipe) -> str:
    import torch
    import transformers
    import trl

    blob = json.dumps({
        "family": family, "spec": dataclasses.asdict(spec), "recipe": dataclasses.asdict(recipe), "version": RECIPE_VERSION,
        "code": _code_hash(), "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
    }, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _codec(family: str, processor: Any):
    from vlmdet.rows import TaskSettings

    return TaskSettings.for_model(family, processor).codec


def scene_row(index: int, recipe: PretrainRecipe, codec: Any, seed_offset: int = 0) -> dict[str, Any]:
    """The TRL prompt/completion row of pre-training scene ``index`` (a pure function of its arguments)."""
    from vlmdet.data.scenes import describe, render_scene, scene_rng

    rng = scene_rng(recipe.seed + seed_offset, index)
    scene = render_scene(rng, recipe.min_side, recipe.max_side, recipe.max_objects)
    task, answer, prompt = _task(rng, scene, recipe, codec)
    return {
        "images": [scene.image],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        "task": task,
    }


def _task(rng: np.random.Generator, scene: Any, recipe: PretrainRecipe, codec: Any) -> tuple[str, str, str]:
    from vlmdet.data.scenes import describe

    task = str(rng.choice(["describe", "count", "locate"], p=np.asarray(recipe.mix) / sum(recipe.mix)))
    if task == "locate" and not scene.objects:
        task = "describe"
    if task == "describe":
        return task, describe(scene.objects), PROMPTS["describe"]
    if task == "count":
        return task, str(len(scene.objects)), PROMPTS["count"]
    box, _shape, colour = scene.objects[int(rng.integers(len(scene.objects)))]
    label = f"{colour} shape"
    return task, codec.encode(np.array([box], dtype=float), [label], scene.image.size), PROMPTS["locate"].format(colour=colour)


def pretrained_path(family: str, spec: TinySpec, recipe: PretrainRecipe) -> Path:
    return cache_root() / "tiny-pretrained" / f"{family}-{cache_key(family, spec, recipe)}"


def ensure_pretrained(family: str, spec: TinySpec | None = None, recipe: PretrainRecipe | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """The folder of ``tiny-pretrained:<family>``: from the cache, or built now (and cached)."""
    spec, recipe = spec or TinySpec(), recipe or PretrainRecipe()
    fam = get_family(family)
    if fam.answer_layout != "chat":
        raise ValueError(
            f"tiny-pretrained:{family}: the pre-training recipe trains chat-layout families (TRL's prompt/completion "
            f"collator); {family} answers as {fam.answer_layout}. Use tiny:{family} (random init)."
        )
    path = pretrained_path(family, spec, recipe)
    if (path / PRETRAIN_FILE).is_file():
        log(f"pre-trained tiny {family} model (cached): {path}")
        return path
    log(f"pre-training a tiny {family} model ({recipe.steps} steps on generated scenes; cached afterwards) -> {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        scores = _build(family, spec, recipe, tmp, log)
        (tmp / PRETRAIN_FILE).write_text(json.dumps(scores, indent=2))
        try:
            os.replace(tmp, path)  # atomic: a killed build leaves no half-written cache entry
        except OSError:  # another process finished first: keep theirs
            if not (path / PRETRAIN_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"pre-trained in {scores['seconds']:.0f} s: {summary(scores)}")
    return path


def summary(scores: dict[str, Any]) -> str:
    s = scores["scores"]
    return (f"describe exact {s['describe_exact']:.2f}, shape names {s['describe_shapes']:.2f}, count exact {s['count_exact']:.2f}, "
            f"locate mean IoU {s['locate_iou']:.2f} on {scores['eval_scenes']} held-out scenes")


def _build(family: str, spec: TinySpec, recipe: PretrainRecipe, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from vlmdet.models.loading import set_max_pixels
    from vlmdet.models.tiny import build_tiny_model

    t0 = time.perf_counter()
    build_tiny_model(family, out, spec)
    processor = AutoProcessor.from_pretrained(out)
    if recipe.max_pixels and hasattr(processor, "image_processor") and "longest_edge" in dict(getattr(processor.image_processor, "size", {}) or {}):
        set_max_pixels(processor, recipe.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    codec = _codec(family, processor)
    set_seed(recipe.seed)

    def transform(batch: dict[str, list]) -> dict[str, list]:
        rows = [scene_row(i, recipe, codec) for i in batch["index"]]
        return {k: [r[k] for r in rows] for k in ("images", "prompt", "completion")}

    train = datasets.Dataset.from_dict({"index": list(range(recipe.steps * recipe.batch_size))}).with_transform(transform)
    args = SFTConfig(
        output_dir=str(out / "_trainer"), max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="cosine", warmup_steps=recipe.warmup_steps, weight_decay=0.0,
        max_grad_norm=1.0, logging_steps=max(1, recipe.steps // 10), save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=recipe.seed, data_seed=recipe.seed, max_length=None, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
        dataloader_num_workers=1 if recipe.steps >= 200 else 0, disable_tqdm=True, loss_type="nll",
    )
    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None, completion_only_loss=True)
    history: list[dict[str, float]] = []

    class LossLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback's signature
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": round(float(logs["loss"]), 4)})
                log(f"  pre-train step {state.global_step}/{recipe.steps}: loss {float(logs['loss']):.3f} ({time.perf_counter() - t0:.0f} s)")

    trainer = SFTTrainer(model=model, args=args, train_dataset=train, data_collator=collator, processing_class=processor,
                         callbacks=[LossLog()])
    trainer.remove_callback(PrinterCallback)  # the loss goes through `log`, not as raw dicts on stdout
    result = trainer.train()
    train_seconds = time.perf_counter() - t0
    model.eval()
    scores = score(model, processor, family, recipe)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    return {
        "family": family, "recipe": dataclasses.asdict(recipe), "spec": json.loads(json.dumps(dataclasses.asdict(spec))),
        "recipe_version": RECIPE_VERSION, "key": out.name, "seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(train_seconds, 1),
        "final_loss": round(float(result.training_loss), 4), "history": history, "eval_scenes": recipe.eval_scenes, "scores": scores,
    }


def generate(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers to prompt rows (batched, left-padded)."""
    import torch

    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    batch = processor(text=texts, images=[r["images"] for r in rows], padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def score(model: Any, processor: Any, family: str, recipe: PretrainRecipe, batch_size: int = 24) -> dict[str, float]:
    """Scores on ``recipe.eval_scenes`` held-out scenes (another seed than training), every task on every scene."""
    from vlmdet.data.scenes import describe, render_scene, scene_rng
    from vlmdet.data.synth import SHAPES
    from vlmdet.metrics.iou import box_iou

    codec = _codec(family, processor)
    scenes = [render_scene(scene_rng(recipe.seed + 1_000_003, i), recipe.min_side, recipe.max_side, recipe.max_objects) for i in range(recipe.eval_scenes)]
    rows, wanted = [], []
    for i, sc in enumerate(scenes):
        for task in ("describe", "count", "locate"):
            if task == "locate" and not sc.objects:
                continue
            k = i % len(sc.objects) if sc.objects else 0
            prompt = PROMPTS[task].format(colour=sc.objects[k][2] if sc.objects else "")
            rows.append({"images": [sc.image], "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]})
            wanted.append((task, sc, k))
    answers: list[str] = []
    for j in range(0, len(rows), batch_size):
        answers += generate(model, processor, rows[j:j + batch_size])
    def shapes_in(text: str) -> list[str]:  # the shape names of a describe answer, in its (left-to-right) order
        return [w for w in text.replace(",", " ").split() if w in SHAPES]

    got: dict[str, list[float]] = {"describe_exact": [], "describe_shapes": [], "count_exact": [], "locate_iou": []}
    for answer, (task, sc, k) in zip(answers, wanted):
        answer = answer.strip()
        if task == "describe":
            truth = describe(sc.objects)
            got["describe_exact"].append(float(answer == truth))
            got["describe_shapes"].append(float(shapes_in(answer) == shapes_in(truth)))
        elif task == "count":
            got["count_exact"].append(float(answer == str(len(sc.objects))))
        else:
            dec = codec.decode(answer, sc.image.size)
            truth_box = np.array([sc.objects[k][0]], dtype=float)
            iou = float(box_iou(np.asarray(dec.boxes[:1], dtype=float), truth_box).max()) if len(dec.boxes) else 0.0
            got["locate_iou"].append(iou)
    return {k: round(float(np.mean(v)) if v else 0.0, 4) for k, v in got.items()}
