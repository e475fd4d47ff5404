"""``vlmdet predict``: images in, boxes out (JSON, original pixels) plus annotated images — a thin
shell over :class:`vlmdet.Detector`."""

from __future__ import annotations

import json
from pathlib import Path

from vlmdet.data.images import open_rgb
from vlmdet.report.draw import PRED_COLOUR, draw_boxes


def run_predict(model: str, images: list[str], classes: list[str] | None = None, phrase: str | None = None, out: str | Path = "runs/predict",
                batch_size: int = 8, family: str | None = None, generation: dict | None = None, confidence: str = "geometric_mean") -> list[dict]:
    from vlmdet.api import Detector

    out = Path(out)
    detector = Detector.from_pretrained(model, family=family, classes=classes, batch_size=batch_size, generation=generation, confidence=confidence)
    found = detector.predict(list(images), phrase=phrase, progress=len(images) > 1)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path, det in zip(images, found):
        names = [str(n) for n in det.data["class_name"]]
        confidences = None if det.confidence is None else [float(c) for c in det.confidence]
        records.append({"image": str(path), "image_wh": list(det.metadata["image_wh"]), "boxes_xyxy": det.xyxy.astype(float).round(2).tolist(),
                        "labels": names, "confidences": confidences, "text": det.metadata["answer"], "parse_failed": det.metadata["parse_failed"]})
        draw_boxes(open_rgb(Path(path)), det.xyxy, names, PRED_COLOUR, scores=confidences).save(out / f"{Path(path).stem}_pred.png")
    (out / "predictions.json").write_text(json.dumps(records, indent=2))
    print(json.dumps(records, indent=2))
    print(f"[vlmdet] wrote predictions.json and annotated images to {out}")
    return records
