"""COCO JSON: ``annotations.json`` + an image folder.

pycocotools does the parsing and indexing (``COCO(path)``); vlmdet adds what it does not: clipping
and dropping bad boxes with counts, EXIF-consistent boxes, errors naming the annotation file and
image id. Images with no annotations are kept as negatives; ``iscrowd`` regions are kept, flagged,
and never used as training targets (metrics ignore them, as COCOeval does).

Roboflow's COCO export (``train/``, ``valid/``, ``test/``, each with ``_annotations.coco.json``)
puts the project's own name first among the categories (``{"id": 0, "name": "<project>",
"supercategory": "none"}``), the supercategory of every real class and used by no annotation. That
placeholder is dropped with a one-line note (:func:`_placeholder_categories`); it would otherwise be
a class in every prompt that no image ever shows.

Two defects pycocotools passes over silently are caught before its index is built: image ids that
repeat (its index keeps the last image of an id, and that image then takes every annotation of the
id) and annotations whose ``image_id`` names no image (never looked at). Both are errors; with
``on_error="skip"`` the images of a repeated id are skipped and the orphan annotations counted.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, image_beside, malformed, make_sample
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport


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
    ambiguous = _check_ids(coco.dataset, ann_path, opts, report)
    try:
        cat_names = {cid: str(c["name"]).strip() for cid, c in coco.cats.items()}
    except (KeyError, TypeError):
        raise DataError(f"{ann_path}: every category needs an id and a name (categories: {coco.dataset.get('categories')!r:.200})") from None
    for cid in _placeholder_categories(coco.dataset):
        report.notes.append(f"category {cid} {cat_names[cid]!r} is the supercategory of the others and no annotation uses it "
                            "(an annotation tool's project name, as Roboflow exports write it): not a class")
        del cat_names[cid]
    # Two ids with one name are one class to a model that reads names.
    classes = list(opts.classes) if opts.classes is not None else list(dict.fromkeys(cat_names[c] for c in sorted(cat_names, key=_id_order)))
    samples = []
    for img_id in sorted(coco.imgs, key=_id_order):
        info = coco.imgs[img_id]
        where = f"{ann_path}, image id {img_id} ({info.get('file_name', '?')})"
        if img_id in ambiguous:
            continue
        try:
            anns = coco.imgToAnns.get(img_id, [])
            boxes, labels, crowd, difficult = [], [], [], []
            for ann in anns:
                if ann.get("category_id") not in cat_names:
                    raise DataError(f"{where}: annotation id {ann.get('id')} has category_id {ann.get('category_id')} missing from categories")
                bbox = ann.get("bbox")
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise DataError(f"{where}: annotation id {ann.get('id')} has no [x, y, w, h] bbox: {bbox!r}")
                try:
                    x, y, w, h = (float(v) for v in bbox)
                except (TypeError, ValueError):
                    raise DataError(f"{where}: annotation id {ann.get('id')} has a bbox that is not 4 numbers: {bbox!r}") from None
                boxes.append([x, y, x + w, y + h])
                labels.append(cat_names[ann["category_id"]])
                crowd.append(bool(ann.get("iscrowd", 0)))
                difficult.append(ann.get("difficult"))
            try:
                declared = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"{where}: width/height are not integers: {info.get('width')!r}, {info.get('height')!r}") from None
            if not isinstance(info.get("file_name"), str) or not info["file_name"]:
                raise DataError(f"{where}: the image has no file_name")
            sample = make_sample(
                sample_id=f"{ann_path.parent.name}/{ann_path.name}#{img_id}",
                where=where,
                image_path=image_beside(ann_path, img_dir, info["file_name"]),
                boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
                labels=labels,
                iscrowd=np.array(crowd, dtype=bool),
                declared_wh=declared,
                opts=opts,
                report=report,
                # VOC's `difficult`, as vlmdet data convert writes it: trained, not scored
                box_meta={"difficult": np.array([bool(d) for d in difficult], dtype=bool)} if any(d is not None for d in difficult) else None,
            )
            sample.meta["coco_image_id"] = img_id
            samples.append(sample)
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    ids: dict[str, int] = {}
    for cid in sorted(cat_names, key=_id_order):
        ids.setdefault(cat_names[cid], cid)
    extra = iter(range(max((i for i in ids.values() if isinstance(i, int)), default=0) + 1, 1 << 30))
    return DetectionDataset(samples, classes, report, name=str(ann_path), category_ids={c: ids[c] if c in ids else next(extra) for c in classes})


def _placeholder_categories(data: dict) -> list:
    """Ids of categories that no annotation uses and that are the supercategory of other categories
    (Roboflow's project-name entry). A category that is merely unused stays a class."""
    cats = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    used = {a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict)}
    parents = {str(c.get("supercategory", "")).strip() for c in cats}
    return [c["id"] for c in cats if c.get("id") not in used and str(c.get("name", "")).strip() in parents
            and any(str(o.get("supercategory", "")).strip() == str(c.get("name", "")).strip() and o is not c for o in cats)]


def _id_order(i) -> tuple:
    """Numeric ids in numeric order; other ids (strings) after them, in text order."""
    return (0, i, "") if isinstance(i, (int, float)) and not isinstance(i, bool) else (1, 0, str(i))


def _check_ids(data: dict, ann_path: Path, opts: ReadOptions, report: ReadReport) -> set:
    """Repeated image ids and annotations that point to no image: errors, or skips and counts.

    Returns the image ids to skip (those that repeat)."""
    seen: dict = {}
    repeated: dict = {}
    for im in data.get("images", []):
        if not isinstance(im, dict) or "id" not in im:
            raise DataError(f"{ann_path}: an entry of 'images' has no id: {im!r}")
        if im["id"] in seen:
            repeated.setdefault(im["id"], [seen[im["id"]]]).append(im.get("file_name", "?"))
        seen[im["id"]] = im.get("file_name", "?")
    for img_id, names in repeated.items():
        where = f"{ann_path}, image id {img_id}"
        exc = DataError(
            f"{where}: {len(names)} images share this id ({', '.join(map(str, names[:4]))}), so their annotations cannot be told "
            "apart. Give every image its own id"
        )
        handle(exc, where, opts, report)
    orphans = [a for a in data.get("annotations", []) if isinstance(a, dict) and a.get("image_id") not in seen]
    if orphans:
        ids = ", ".join(str(a.get("id")) for a in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        if opts.on_error == "raise":
            first = orphans[0]
            raise DataError(
                f"{ann_path}: {len(orphans)} annotations point to no image (annotation ids {ids}; e.g. image_id "
                f"{first.get('image_id')!r}). The images list is incomplete or the ids are wrong: fix the file, "
                "or pass --on-bad-data skip (config: on_bad_data=skip) to drop them and count them"
            )
        report.orphan_annotations += len(orphans)
    return set(repeated)
