"""COCO JSON: ``annotations.json`` + an image folder.

pycocotools does the parsing and indexing (``COCO(path)``); vlmdet adds what it does not: clipping
and dropping bad boxes with counts, EXIF-consistent boxes, errors naming the annotation file and
image id. Images with no annotations are kept as negatives; ``iscrowd`` regions are kept, flagged,
and never used as training targets (metrics ignore them, as COCOeval does).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from vlmdet.data.readers.common import ReadOptions, handle, make_sample
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport


def _image_root(ann_path: Path, images: Path | None, file_name: str) -> Path:
    if images is not None:
        return images / file_name
    for candidate in (ann_path.parent / file_name, ann_path.parent / "images" / file_name):
        if candidate.exists():
            return candidate
    return ann_path.parent / file_name


def read_coco(
    annotations: str | Path,
    images: str | Path | None = None,
    options: ReadOptions | None = None,
) -> DetectionDataset:
    """Read a COCO detection file.

    Args:
        annotations: the COCO JSON (``images``, ``annotations``, ``categories``).
        images: folder the ``file_name`` entries are relative to; default: the JSON's folder, then
            its ``images/`` subfolder.
        options: bad-input policy (see :class:`ReadOptions`). Category names are the class names;
            with ``options.classes`` every category used must be in that closed set.
    """
    opts = options or ReadOptions()
    ann_path = Path(annotations)
    img_dir = Path(images) if images is not None else None
    if not ann_path.is_file():
        raise DataError(f"COCO annotations not found: {ann_path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco = COCO(str(ann_path))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(f"{ann_path}: not a valid COCO detection file ({exc.__class__.__name__}: {exc})") from None
    report = ReadReport(source=str(ann_path))
    cat_names = {cid: c["name"] for cid, c in coco.cats.items()}
    classes = list(opts.classes) if opts.classes is not None else [cat_names[c] for c in sorted(cat_names)]
    samples = []
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        where = f"{ann_path}, image id {img_id} ({info.get('file_name', '?')})"
        try:
            anns = coco.imgToAnns.get(img_id, [])
            boxes, labels, crowd = [], [], []
            for ann in anns:
                if ann.get("category_id") not in cat_names:
                    raise DataError(f"{where}: annotation id {ann.get('id')} has category_id {ann.get('category_id')} missing from categories")
                bbox = ann.get("bbox")
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise DataError(f"{where}: annotation id {ann.get('id')} has no [x, y, w, h] bbox: {bbox!r}")
                x, y, w, h = (float(v) for v in bbox)
                boxes.append([x, y, x + w, y + h])
                labels.append(cat_names[ann["category_id"]])
                crowd.append(bool(ann.get("iscrowd", 0)))
            declared = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
            sample = make_sample(
                sample_id=f"{ann_path.parent.name}/{ann_path.name}#{img_id}",
                where=where,
                image_path=_image_root(ann_path, img_dir, info["file_name"]),
                boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
                labels=labels,
                iscrowd=np.array(crowd, dtype=bool),
                declared_wh=declared,
                opts=opts,
                report=report,
            )
            sample.meta["coco_image_id"] = img_id
            samples.append(sample)
        except DataError as exc:
            handle(exc, where, opts, report)
    return DetectionDataset(samples, classes, report, name=str(ann_path))
