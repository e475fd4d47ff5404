"""JSONL: one JSON object per line. Three shapes are accepted, per line:

* detection  ``{"image": "a.jpg", "boxes": [[x1, y1, x2, y2], ...], "labels": ["cat", ...]}``
  (``"box_format"``: ``xyxy`` (default) | ``xywh`` | ``cxcywh``; ``"normalized": true`` for 0..1;
  optional ``"width"``/``"height"`` declare the frame the boxes were drawn in);
* PaliGemma / maestro  ``{"image": "a.jpg", "prefix": "detect cat ; dog", "suffix": "<loc0012>... cat ; ..."}``
  (the suffix is decoded with vlmdet's PaliGemma codec; the prefix names the classes);
* grounding  ``{"image": "a.jpg", "phrase": "the red car", "bbox": [x1, y1, x2, y2]}``
  (``"boxes"`` for several; ``"expression"``/``"sentence"``/``"ref"`` are accepted for ``phrase``).

Image paths are relative to the JSONL file's folder unless ``images`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, malformed, make_sample, to_xyxy
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport

PHRASE_KEYS = ("phrase", "expression", "sentence", "ref", "caption")


def _boxes(rec: dict[str, Any], where: str) -> np.ndarray:
    raw = rec.get("boxes", rec.get("bbox", rec.get("bboxes")))
    if raw is None:
        return np.zeros((0, 4))
    arr = np.asarray(raw, dtype=object)
    if arr.ndim == 1 and len(arr) and not isinstance(raw[0], (list, tuple)):  # one box written flat
        if len(arr) != 4:  # 8 flat numbers are not two boxes: the file's layout is not known
            raise DataError(f"{where}: a box is 4 numbers [x1, y1, x2, y2], got {len(arr)} ({raw!r:.80}); write several boxes as a list of lists")
        raw = [raw]
    try:
        return np.asarray(raw, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        raise DataError(f"{where}: boxes must be lists of 4 numbers, got {raw!r}") from None


def parse_record(rec: Any, where: str, root: Path) -> dict[str, Any]:
    """One JSONL record -> keyword arguments for ``make_sample`` (without options/report)."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: each line must be a JSON object")
    image = rec.get("image") or rec.get("image_path") or rec.get("file_name")
    if not isinstance(image, str):
        raise DataError(f"{where}: no 'image' path")
    path = Path(image) if Path(image).is_absolute() else root / image
    out: dict[str, Any] = {"image_path": path, "phrase": None, "normalized_fmt": None, "declared_wh": None}
    if "suffix" in rec:  # PaliGemma / maestro style: boxes live in <loc> tokens, sized by the image
        out["paligemma_suffix"] = str(rec["suffix"])
        out["prefix"] = str(rec.get("prefix", ""))
        return out
    phrase = next((rec[k] for k in PHRASE_KEYS if k in rec), None)
    boxes = _boxes(rec, where)
    if phrase is not None:
        if not isinstance(phrase, str) or not phrase.strip():
            raise DataError(f"{where}: empty grounding phrase")
        out["phrase"] = phrase.strip()
        labels = [out["phrase"]] * len(boxes)
    else:
        labels = rec.get("labels", rec.get("label", rec.get("classes")))
        labels = [labels] if isinstance(labels, str) else labels
        if labels is None:
            labels = []
        if len(labels) != len(boxes):
            raise DataError(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
        labels = [str(v) for v in labels]
    fmt = rec.get("box_format", "xyxy")
    if rec.get("normalized"):
        out["normalized_fmt"] = fmt
    else:
        boxes = to_xyxy(boxes, fmt)
    if "width" in rec and "height" in rec:
        out["declared_wh"] = (int(rec["width"]), int(rec["height"]))
    out["boxes"], out["labels"] = boxes, labels
    return out


def read_jsonl(path: str | Path, images: str | Path | None = None, options: ReadOptions | None = None) -> DetectionDataset:
    """Read a JSONL detection / PaliGemma / grounding file (shapes in the module docstring)."""
    from vlmdet.codecs import get_codec
    from vlmdet.data.images import probe_image

    opts = options or ReadOptions()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"JSONL file not found: {path}")
    root = Path(images) if images is not None else path.parent
    report = ReadReport(source=str(path))
    samples, seen_classes = [], []
    pali = get_codec("paligemma")
    with path.open("rb") as fh:
        for lineno, raw_line in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                kw = parse_record(rec, where, root)
                if "paligemma_suffix" in kw:
                    info = probe_image(kw["image_path"], where, verify=False)
                    wh = info.display_wh if opts.exif == "auto" else info.raw_wh
                    decoded = pali.decode(kw.pop("paligemma_suffix"), wh)
                    if decoded.failed:
                        raise DataError(f"{where}: suffix is not '<locY1><locX1><locY2><locX2> label ; ...': {decoded.raw!r}")
                    prefix = kw.pop("prefix")
                    if prefix.startswith("detect "):
                        seen_classes += [c.strip() for c in prefix[len("detect "):].split(";") if c.strip()]
                    kw["boxes"], kw["labels"] = decoded.boxes, decoded.labels
                sample = make_sample(sample_id=f"{path.name}:{lineno}", where=where, opts=opts, report=report, **kw)
                seen_classes += sample.labels if sample.phrase is None else []
                samples.append(sample)
            except DataError as exc:
                handle(exc, where, opts, report)
            except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
                handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else list(dict.fromkeys(seen_classes))
    return DetectionDataset(samples, classes, report, name=str(path))
