"""``vlmdet eval``: batched greedy generation over a whole split -> decode -> COCO metrics -> report.

Writes into ``--out``:

* ``metrics.json``  — the :class:`~vlmdet.metrics.DetectionResult` of each model evaluated;
* ``predictions.json`` — per image: raw answer, decoded boxes (original pixels), parse flag;
* ``results.json``  — the same detections in COCO results format (``vlmdet metrics`` reads it);
* ``report.md``     — the metrics table (side by side with ``--compare``);
* ``images/``       — a handful of annotated images, ground truth vs prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmdet.data.readers import ReadOptions, open_dataset
from vlmdet.data.sample import DetectionDataset
from vlmdet.metrics import DetectionResult
from vlmdet.predict import Prediction, Predictor, evaluate_predictions
from vlmdet.data.sample import DataError
from vlmdet.models.loading import load_processor
from vlmdet.predict.loading import load_for_inference
from vlmdet.run import check_samples
from vlmdet.report import markdown_table, print_table
from vlmdet.report.draw import gt_vs_pred, save_annotated

SCORE_NOTE = (
    "Scores: VLMs give no confidence, so every predicted box has score 1.0 and COCOeval ranks boxes in "
    "the order the model listed them (its sort is stable). AP is therefore measured at the one "
    "operating point the model actually produces, not over a confidence sweep."
)


@dataclass
class ModelEval:
    name: str
    result: DetectionResult
    predictions: list[Prediction]


def evaluate_model(model_dir: str, dataset: DetectionDataset, batch_size: int = 8, family: str | None = None, max_new_tokens: int | None = None, progress: bool = True) -> ModelEval:
    grounding = any(s.phrase for s in dataset)
    # A trained folder keeps the classes (so the prompt) it was trained with; a bare model gets the dataset's.
    model, processor, settings = load_for_inference(model_dir, family=family, task="ground" if grounding else None)
    if not grounding:
        if not settings.classes:
            settings.classes = list(dataset.classes)
        elif list(settings.classes) != list(dataset.classes):
            print(f"[vlmdet] note: {model_dir} was trained to detect {settings.classes}; the dataset lists {dataset.classes}. "
                  "Prompting with the trained classes.", flush=True)
    settings.check()
    predictor = Predictor(model, processor, settings, batch_size=batch_size, max_new_tokens=max_new_tokens)
    preds = predictor.predict(dataset.samples, progress=progress, desc=f"eval {Path(model_dir).name}")
    return ModelEval(str(model_dir), evaluate_predictions(dataset.samples, preds, settings), preds)


def coco_results(dataset: DetectionDataset, preds: list[Prediction]) -> list[dict[str, Any]]:
    """Detections in COCO results format: image and category ids are the COCO file's own when the
    data came from one (``dataset.category_ids``), else 1..n."""
    cat = dataset.category_ids
    out = []
    for idx, (s, p) in enumerate(zip(dataset.samples, preds), start=1):
        image_id = s.meta.get("coco_image_id", idx)
        for (x1, y1, x2, y2), label in zip(p.boxes, p.labels):
            if label in cat:
                out.append({"image_id": image_id, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0})
    return out


def run_eval(
    model: str,
    data: str,
    split: str = "val",
    out: str | Path = "runs/eval",
    batch_size: int = 8,
    compare: str | None = None,
    max_samples: int | None = None,
    n_images: int = 8,
    family: str | None = None,
    max_new_tokens: int | None = None,
    on_bad_data: str = "raise",
) -> list[ModelEval]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data, split, ReadOptions(on_error=on_bad_data))
    print(f"[vlmdet] {ds.report.summary()}", flush=True)
    if max_samples:
        ds = ds.subset(range(min(max_samples, len(ds))))
    models = [model] + ([compare] if compare else [])
    for m in models:  # every model is scored on the same images: drop those any of them cannot take
        processor, _ = load_processor(m, family)
        check_samples(ds, None, processor, on_bad_data, targets=False)
    if not len(ds):
        raise DataError(f"{data} [{split}]: no images to evaluate")
    evals = [evaluate_model(m, ds, batch_size, family, max_new_tokens) for m in models]
    columns = {Path(e.name).name or e.name: e.result.to_dict() for e in evals}
    if len(columns) < len(evals):  # two models with the same folder name
        columns = {e.name: e.result.to_dict() for e in evals}
    (out / "metrics.json").write_text(json.dumps({e.name: e.result.to_dict() for e in evals}, indent=2))
    first = evals[0]
    (out / "predictions.json").write_text(
        json.dumps(
            [
                {"id": s.id, "image_wh": list(s.image_wh), "text": p.text, "boxes": p.boxes.round(2).tolist(), "labels": p.labels, "parse_failed": p.decoded.failed}
                for s, p in zip(ds.samples, first.predictions)
            ],
            indent=1,
        )
    )
    (out / "results.json").write_text(json.dumps(coco_results(ds, first.predictions)))
    lines = [f"# vlmdet eval: `{data}` split `{split}` ({len(ds)} images)", "", markdown_table(columns), "", SCORE_NOTE]
    pcap = first.result.per_class_ap
    if pcap and any(v >= 0 for v in pcap.values()):
        lines += ["", f"Per-class AP@[.5:.95] ({Path(first.name).name}):", "", "| class | AP |", "| --- | ---: |"]
        lines += [f"| {k} | {'n/a' if v == -1 else f'{v:.3f}'} |" for k, v in pcap.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    for s, p in list(zip(ds.samples, first.predictions))[:n_images]:
        save_annotated(out / "images" / f"{Path(s.id).name.replace('#', '_').replace(':', '_')}.png", gt_vs_pred(s.load_image(), s.boxes, s.labels, p.boxes, p.labels))
    print_table(columns, title=f"{data} [{split}] — {len(ds)} images")
    print(f"[vlmdet] wrote metrics.json, predictions.json, results.json, report.md, images/ to {out}")
    return evals
