"""``vlmdet predict``: images in, boxes out (JSON, original pixels) plus annotated images."""

from __future__ import annotations

import json
from pathlib import Path

from vlmdet.data.images import open_rgb, probe_image
from vlmdet.data.sample import DataError, Sample
from vlmdet.models.processing import image_problem
from vlmdet.predict.loading import load_for_inference
from vlmdet.predict.predictor import Predictor
from vlmdet.report.draw import PRED_COLOUR, draw_boxes


def run_predict(model: str, images: list[str], classes: list[str] | None = None, phrase: str | None = None, out: str | Path = "runs/predict",
                batch_size: int = 8, family: str | None = None, generation: dict | None = None, confidence: str = "geometric_mean") -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m, processor, settings = load_for_inference(model, family=family, classes=classes, task="ground" if phrase else None)
    if not phrase and not settings.classes:
        raise ValueError(f"{model} has no saved class list (no vlmdet.json): pass --classes a,b,c or --phrase")
    samples, pil = [], {}
    for i, path in enumerate(images):
        p = Path(path)
        info = probe_image(p, str(p))
        problem = image_problem(processor, info.display_wh)
        if problem:
            raise DataError(f"{p}: {problem}; crop or pad the image")
        samples.append(Sample(id=f"{i}:{p.name}", image_wh=info.display_wh, boxes=[], labels=[], phrase=phrase, source=str(p), image_path=p))
        pil[samples[-1].id] = open_rgb(p)
    preds = Predictor(m, processor, settings, batch_size=batch_size, decoding=generation, confidence=confidence).predict(samples, pil, progress=len(samples) > 1)
    records = []
    for s, p in zip(samples, preds):
        records.append({"image": s.source, "image_wh": list(s.image_wh), "boxes_xyxy": p.boxes.round(2).tolist(), "labels": p.labels,
                        "confidences": p.confidences, "text": p.text, "parse_failed": p.decoded.failed})
        draw_boxes(pil[s.id], p.boxes, p.labels, PRED_COLOUR, scores=p.confidences).save(out / f"{Path(s.source).stem}_pred.png")
    (out / "predictions.json").write_text(json.dumps(records, indent=2))
    print(json.dumps(records, indent=2))
    print(f"[vlmdet] wrote predictions.json and annotated images to {out}")
    return records
