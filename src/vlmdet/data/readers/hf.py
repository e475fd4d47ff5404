"""Hugging Face ``datasets``: a local ``save_to_disk`` folder or a hub id (when online).

Expected columns (names configurable): an image column (``datasets.Image`` or paths) and an
``objects``-style column holding, per image, the boxes and categories — either a dict of lists
(``{"bbox": [[...], ...], "category": [0, 2]}``, as in cppe-5 / detection-datasets) or a list of
dicts. Categories may be ``ClassLabel`` ints (names come from the features) or strings. Declare the
bbox format: ``xywh`` (COCO-style, the common case), ``xyxy`` or ``cxcywh``, optionally normalised.
With ``phrase_column`` each row is a grounding sample.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from vlmdet.data.images import to_rgb
from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, malformed, to_xyxy
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport, Sample, check_classes, clean_boxes


def _load(source: str, split: str):
    import datasets

    path = Path(source)
    if path.exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: not a `save_to_disk` dataset folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has: {', '.join(ds)})")
            ds = ds[split]
        return ds
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, bad split: one clear message
        raise DataError(
            f"cannot load dataset {source!r} split {split!r} ({exc.__class__.__name__}: {exc}). "
            f"Offline, pass a local folder written with `Dataset.save_to_disk`."
        ) from None


def _category_names(ds, objects_column: str, category_key: str) -> list[str] | None:
    import datasets

    feat = ds.features.get(objects_column)
    inner = None
    if isinstance(feat, dict):
        inner = feat.get(category_key)
    elif isinstance(feat, (datasets.Sequence, datasets.List)) and isinstance(getattr(feat, "feature", None), dict):
        inner = feat.feature.get(category_key)
    while inner is not None and not isinstance(inner, datasets.ClassLabel) and hasattr(inner, "feature"):
        inner = inner.feature
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _to_pil(value: Any, where: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes"):
        return Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, dict) and value.get("path"):
        return Image.open(value["path"])
    if isinstance(value, str):
        return Image.open(value)
    raise DataError(f"{where}: image column holds {type(value).__name__}, not an image")


def read_hf(
    source: str | Path,
    split: str = "train",
    image_column: str = "image",
    objects_column: str = "objects",
    bbox_key: str = "bbox",
    category_key: str = "category",
    bbox_format: str = "xywh",
    normalized: bool = False,
    phrase_column: str | None = None,
    class_names: Sequence[str] | None = None,
    options: ReadOptions | None = None,
) -> DetectionDataset:
    """Read a ``datasets`` split into Samples (columns and bbox format as in the module docstring)."""
    opts = options or ReadOptions()
    ds = _load(str(source), split)
    for col in (image_column, objects_column):
        if col not in ds.column_names:
            raise DataError(f"{source} [{split}]: no column {col!r} (columns: {', '.join(ds.column_names)}); set image_column/objects_column")
    names = list(class_names) if class_names is not None else _category_names(ds, objects_column, category_key)
    report = ReadReport(source=f"{source} [{split}]")
    samples, seen = [], []
    # Keep images undecoded: each sample decodes its own on demand (EXIF-aware), so a large dataset
    # is never held in memory as pixels.
    import datasets

    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    if phrase_column and phrase_column not in ds.column_names:
        raise DataError(f"{source} [{split}]: no phrase column {phrase_column!r} (columns: {', '.join(ds.column_names)})")
    for i, row in enumerate(ds):
        where = f"{source} [{split}] row {i}"
        try:
            objs = row[objects_column]
            if isinstance(objs, list):  # list of dicts
                bboxes = [o.get(bbox_key) for o in objs]
                cats = [o.get(category_key) for o in objs]
            elif isinstance(objs, dict):
                bboxes, cats = objs.get(bbox_key) or [], objs.get(category_key) or []
            else:
                raise DataError(f"{where}: column {objects_column!r} is neither a dict of lists nor a list of dicts")
            if len(bboxes) != len(cats):
                raise DataError(f"{where}: {len(bboxes)} boxes but {len(cats)} categories")
            labels = []
            for c in cats:
                if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                    if names is None or not (0 <= int(c) < len(names)):
                        raise DataError(f"{where}: integer category {c} with no class name; pass class_names=")
                    labels.append(names[int(c)])
                else:
                    labels.append(str(c))
            raw_value = row[image_column]
            try:
                img = _to_pil(raw_value, where)
                img = ImageOps.exif_transpose(img) if opts.exif == "auto" else img
                if opts.verify_images:
                    img.load()
                    if img.mode not in ("RGB", "L"):
                        to_rgb(img, where)
            except Image.DecompressionBombError as exc:
                raise DataError(f"{where}: the image is larger than PIL's decompression-bomb limit ({exc}); downscale it") from None
            except (OSError, SyntaxError, EOFError) as exc:
                raise DataError(f"{where}: cannot decode image ({exc.__class__.__name__}: {exc})") from None
            wh = img.size
            arr = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
            boxes = to_xyxy(arr, bbox_format, scale_wh=wh if normalized else None)
            phrase = str(row[phrase_column]).strip() if phrase_column else None
            if phrase:
                labels = [phrase] * len(boxes)
            check_classes(labels if not phrase else [], opts.classes, where)
            keep = clean_boxes(boxes, wh, report)
            labels = [label for label, k in zip(labels, keep) if k]
            boxes = boxes[keep]
            report.images += 1
            report.boxes += len(boxes)
            exif = opts.exif == "auto"

            def loader(value=raw_value, exif=exif, where=where) -> Image.Image:
                im = _to_pil(value, where)
                return to_rgb(ImageOps.exif_transpose(im) if exif else im, where)

            samples.append(Sample(id=f"{split}/{i}", image_wh=wh, boxes=boxes, labels=labels, phrase=phrase, source=where, image_loader=loader))
            seen += [] if phrase else labels
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else (names if names is not None else list(dict.fromkeys(seen)))
    return DetectionDataset(samples, [] if phrase_column else classes, report, name=f"{source}[{split}]")
