"""The model card (``README.md``) of a run folder or an export: what the model is, in the Hub's format.

TRL's trainers leave a generic card in the output folder ("a fine-tuned version of
[None](https://huggingface.co/None)"). vlmdet replaces it with its own, built from the files the run
left: ``vlmdet.json`` (family, codec, classes, prompt), ``run.json`` (data counts and split),
``report.json`` (before / after / image-blind baselines, decoding) and, in an export,
``export.json``. The metadata block is written by huggingface_hub's ``ModelCardData`` and
``EvalResult`` so that its ``model-index`` is the one the Hub renders on the model page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _short(name: Any) -> str:
    """A hub id stays as it is; a local path becomes its folder name (a card must not leak a user's paths)."""
    s = str(name or "")
    p = Path(s)
    return p.name if s and (p.is_absolute() or s.startswith(".") or p.exists()) else s


def card_text(folder: str | Path, source: str | Path | None = None, name: str | None = None) -> str:
    """The card of ``folder``; for an export, ``source`` is the run folder it was exported from (its
    report and run record describe the model) and ``name`` the folder's final name (it is written
    in a temporary folder, then renamed)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from vlmdet.prompts import Task, build_prompt
    from vlmdet.report import decoding_note, markdown_table, run_columns
    from vlmdet.rows import SETTINGS_FILE, TaskSettings

    folder = Path(folder)
    title = name or folder.name
    src = Path(source) if source is not None else folder
    settings = TaskSettings.load(folder) or TaskSettings.load(src)
    if settings is None:
        raise FileNotFoundError(f"{folder} has no {SETTINGS_FILE}: a vlmdet card describes a folder written by vlmdet train, rl or export")
    report = _read(src / "report.json")
    run = _read(src / "run.json")
    export = _read(folder / "export.json")
    fp = run.get("fingerprint") or {}
    cfg = fp.get("settings") or {}
    fam = settings.family_spec
    base = report.get("model") or cfg.get("model") or export.get("base_model") or ""
    base_short = _short(base)
    data = report.get("data") or cfg.get("data") or ""
    data_short = _short(data) or "dataset"
    method = {"sft": "supervised fine-tuning (TRL SFTTrainer)", "grpo": "GRPO with box rewards (TRL GRPOTrainer)"}.get(run.get("method", ""), run.get("method") or "fine-tuning")
    finetune = export.get("finetune") or report.get("finetune") or cfg.get("finetune") or "full"

    after = report.get("after")
    evals = []
    if after:
        for key, metric in (("map50", "mAP50"), ("map", "mAP50-95")):
            if after.get(key) is not None:
                evals.append(EvalResult(task_type="object-detection", dataset_type=data_short, dataset_name=data_short,
                                        dataset_split=report.get("eval_split"), metric_type=metric, metric_name=metric,
                                        metric_value=round(float(after[key]), 4)))
    hub_base = base if base and not Path(str(base)).exists() and not str(base).startswith(("tiny", ".", "/")) else None
    meta = ModelCardData(library_name="transformers", pipeline_tag="image-text-to-text", base_model=hub_base,
                         tags=["vlmdet", "object-detection", "visual-grounding" if settings.task == "ground" else "detection", fam.name],
                         model_name=title, eval_results=evals or None)

    if settings.task == "ground":
        prompt = build_prompt(Task("ground", phrase="<phrase>"), fam.prompt_style)
    elif settings.task == "detect_named":
        prompt = build_prompt(Task("detect_named", tuple(settings.classes)), fam.prompt_style)
    else:
        prompt = build_prompt(Task("detect", tuple(settings.classes)), fam.prompt_style)
    codec = settings.codec
    space = getattr(codec, "space", "")
    lines = [
        f"# {title}",
        "",
        f"A {fam.name} model fine-tuned for {'visual grounding' if settings.task == 'ground' else 'object detection'} with "
        f"vlmdet: {method}, {finetune} fine-tuning, from `{base_short or 'unknown base'}`.",
        "",
        "## What it does",
        "",
        f"- Family: `{fam.name}`; it writes boxes with the `{getattr(codec, 'name', fam.codec)}` codec"
        + (f" in `{space}` coordinates" if space else "")
        + (f" (codec settings: `{json.dumps(settings.codec_settings)}`)" if settings.codec_settings else "") + ".",
        f"- Classes ({len(settings.classes)}): {', '.join(f'`{c}`' for c in settings.classes) or 'open (grounding)'}.",
        f"- Prompt (one image, then this text): `{prompt}`" + (" (at use, it names the classes present)" if settings.task == "detect_named" else ""),
        f"- Answers up to {settings.max_new_tokens} new tokens.",
        "",
        "## Data",
        "",
        f"- Dataset: `{data_short}`; {fp.get('train_samples', '?')} training images, "
        f"{fp.get('eval_samples', '?')} evaluation images (split `{report.get('eval_split') or cfg.get('eval_split') or '?'}`).",
    ]
    split = fp.get("split")
    if split:
        lines.append(f"- The dataset had no evaluation split: vlmdet held one out ({json.dumps(split, default=str)}).")
    lines += ["", "## Scores", ""]
    if report:
        lines += [f"On {report.get('eval_images', '?')} images of the `{report.get('eval_split', '?')}` split, with the image-blind baselines computed from the training split "
                  "(a model that does not beat them has not learned to look at the image):", "",
                  markdown_table(run_columns(report.get("before"), after, report, report.get("baselines"))), ""]
        if report.get("baseline_verdict"):
            lines += [f"**Against the baselines:** {report['baseline_verdict']}.", ""]
        lines += [decoding_note(report), ""]
        if report.get("steps") is not None and report.get("train_seconds") is not None:
            lines += [f"Training: {report['steps']} steps in {report['train_seconds']:.0f} s.", ""]
    else:
        lines += ["This run was not scored (eval.before and eval.after were off): run `vlmdet eval --model THIS_FOLDER --data ...`.", ""]
    if export:
        lines += [f"Exported in {export.get('dtype')} ({'LoRA merged into the base' if export.get('merged') else 'full weights'}); "
                  f"generation_config.json holds the decoding: `{json.dumps(export.get('generation'), default=str)}`.", ""]
    lines += [
        "## How to use it",
        "",
        "With vlmdet (returns `supervision.Detections` in the image's pixels):",
        "",
        "```python",
        "from PIL import Image",
        "from vlmdet import Detector",
        "",
        f'detector = Detector.from_pretrained("{title}")',
        'detections = detector.predict([Image.open("photo.jpg")])[0]',
        "```",
        "",
        "With plain transformers (the answer is text; the codec above turns it into boxes):",
        "",
        "```python",
        "from PIL import Image",
        f"from transformers import AutoProcessor, {fam.auto_class}",
        "",
        f'model = {fam.auto_class}.from_pretrained("{title}")',
        f'processor = AutoProcessor.from_pretrained("{title}")',
        f'messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": {json.dumps(prompt)}}}]}}]',
        "text = processor.apply_chat_template(messages, add_generation_prompt=True)",
        'inputs = processor(images=[[Image.open("photo.jpg").convert("RGB")]], text=[text], return_tensors="pt")',
        "answer = processor.decode(model.generate(**inputs)[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True)",
        "```",
        "",
        "Evaluate it on your data: `vlmdet eval --model THIS_FOLDER --data YOUR_DATA`.",
    ]
    # the body is not a Jinja template (a prompt may hold braces): the metadata block is joined as YAML
    return ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n").content


def write_card(folder: str | Path, source: str | Path | None = None, name: str | None = None) -> Path:
    """Write vlmdet's ``README.md`` card into ``folder`` (replacing TRL's generic one); returns its path."""
    path = Path(folder) / CARD_FILE
    path.write_text(card_text(folder, source, name))
    return path
