"""What vlmdet reads, written in a standard format: ``vlmdet data convert --to coco|yolo|jsonl``.

Written here rather than with supervision's ``as_coco`` / ``as_yolo``: those re-encode every image
through OpenCV (a JPEG loses quality, EXIF orientation is baked in or lost) and drop crowd regions
and VOC ``difficult`` flags. vlmdet copies the image files byte for byte and writes boxes so that
reading the output gives the same boxes back (``tests/data/test_convert.py`` checks the round trip):

* ``coco``  — ``<split>/annotations.json`` + ``<split>/images/``; ``bbox`` xywh pixels of the image
  as shown (EXIF applied; ``width``/``height`` the shown size), ``iscrowd``, and VOC ``difficult``
  as an extra annotation key that vlmdet's COCO reader reads back;
* ``yolo``  — ``data.yaml`` + ``images/<split>/`` + ``labels/<split>/*.txt`` (``class cx cy w h``
  normalised, 7 decimals). YOLO has no crowd regions or difficult flags: crowd regions are left
  out (counted), difficult objects are written as ordinary boxes (counted);
* ``jsonl`` — ``<split>.jsonl`` + ``images/<split>/``, one ``{"image", "width", "height", "boxes"
  (xyxy pixels), "labels"}`` per line (crowd regions left out, counted).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from vlmdet.data.sample import DataError, DetectionDataset, Sample

FORMATS = ("coco", "yolo", "jsonl")


def _file_names(samples: list[Sample]) -> list[str]:
    """One file name per sample, the original one where it is unique in the split."""
    names = [Path(s.image_path).name if s.image_path is not None else f"{k:06d}.png" for k, s in enumerate(samples)]
    seen = Counter(names)
    return [n if seen[n] == 1 else f"{k:06d}_{n}" for k, n in enumerate(names)]


def _copy_image(s: Sample, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if s.image_path is not None:
        shutil.copyfile(s.image_path, dest)
    else:
        s.load_image().save(dest)


def write_coco(ds: DetectionDataset, out: Path) -> dict[str, int]:
    """``out/annotations.json`` + ``out/images/`` (see the module docstring)."""
    cat = ds.category_ids
    images, anns = [], []
    for k, (s, name) in enumerate(zip(ds.samples, _file_names(ds.samples)), start=1):
        _copy_image(s, out / "images" / name)
        images.append({"id": k, "file_name": f"images/{name}", "width": int(s.image_wh[0]), "height": int(s.image_wh[1])})
        difficult = s.meta.get("difficult")
        for j, ((x1, y1, x2, y2), label) in enumerate(zip(s.boxes.tolist(), s.labels)):
            if label not in cat:
                raise DataError(f"{s.source or s.id}: label {label!r} is not one of the dataset's classes")
            ann = {"id": len(anns) + 1, "image_id": k, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                   "area": (x2 - x1) * (y2 - y1), "iscrowd": int(s.iscrowd[j])}
            if difficult is not None:
                ann["difficult"] = int(bool(difficult[j]))
            anns.append(ann)
    categories = [{"id": cat[c], "name": c, "supercategory": "object"} for c in ds.classes]
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return {"images": len(images), "boxes": len(anns)}


def write_yolo_split(ds: DetectionDataset, out: Path, split: str) -> dict[str, int]:
    """``out/images/<split>/`` + ``out/labels/<split>/*.txt``; returns counts (crowd left out)."""
    index = {c: i for i, c in enumerate(ds.classes)}
    counts = Counter()
    for s, name in zip(ds.samples, _file_names(ds.samples)):
        _copy_image(s, out / "images" / split / name)
        w, h = s.image_wh
        rows = []
        difficult = s.meta.get("difficult")
        for j, ((x1, y1, x2, y2), label) in enumerate(zip(s.boxes.tolist(), s.labels)):
            if s.iscrowd[j]:
                counts["crowd_left_out"] += 1
                continue
            counts["difficult_as_boxes"] += int(difficult is not None and bool(difficult[j]))
            rows.append(f"{index[label]} {(x1 + x2) / 2 / w:.7f} {(y1 + y2) / 2 / h:.7f} {(x2 - x1) / w:.7f} {(y2 - y1) / h:.7f}")
            counts["boxes"] += 1
        label_file = out / "labels" / split / Path(name).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(r + "\n" for r in rows))
        counts["images"] += 1
    return dict(counts)


def write_jsonl_split(ds: DetectionDataset, out: Path, split: str) -> dict[str, int]:
    counts = Counter()
    lines = []
    for s, name in zip(ds.samples, _file_names(ds.samples)):
        _copy_image(s, out / "images" / split / name)
        keep = ~s.iscrowd
        counts["crowd_left_out"] += int((~keep).sum())
        rec = {"image": f"images/{split}/{name}", "width": int(s.image_wh[0]), "height": int(s.image_wh[1]),
               "boxes": s.boxes[keep].tolist(), "labels": [lab for lab, k in zip(s.labels, keep) if k]}
        lines.append(json.dumps(rec))
        counts["images"] += 1
        counts["boxes"] += int(keep.sum())
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return dict(counts)


def convert(splits: dict[str, DetectionDataset], to: str, out: str | Path) -> dict[str, dict[str, int]]:
    """Write every split of ``splits`` into ``out`` in format ``to``; returns counts per split.

    Splits keep their names (a Roboflow ``valid`` is written as ``val``, the name vlmdet and
    Ultralytics use). ``out`` must not exist or be empty: nothing is written over."""
    if to not in FORMATS:
        raise ValueError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder: choose another --out, or remove it")
    classes = list(dict.fromkeys(c for ds in splits.values() for c in ds.classes))
    done: dict[str, dict[str, int]] = {}
    for split, ds in splits.items():
        if to == "coco":
            done[split] = write_coco(ds, out / split)
        elif to == "yolo":
            ds = DetectionDataset(ds.samples, classes, ds.report, ds.name)
            done[split] = write_yolo_split(ds, out, split)
        else:
            done[split] = write_jsonl_split(ds, out, split)
    if to == "yolo":
        lines = ["# written by vlmdet data convert", "path: .", *(f"{s}: images/{s}" for s in splits), f"nc: {len(classes)}", "names:"]
        lines += [f"  {i}: {json.dumps(c)}" for i, c in enumerate(classes)]
        (out / "data.yaml").write_text("\n".join(lines) + "\n")
    return done


def boxes_equal(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=tol))
