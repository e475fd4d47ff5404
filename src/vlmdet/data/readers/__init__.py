"""Readers: every dataset format becomes a :class:`~vlmdet.data.sample.DetectionDataset` of Samples.

``open_dataset(spec, split)`` picks the reader from ``spec``:

===============================================  ==============================================
spec                                             reader
===============================================  ==============================================
``path/annotations.json`` (COCO)                 :func:`read_coco`
folder with ``<split>/annotations.json``         :func:`read_coco` on that split (vlmdet synth,
  (or ``<split>/_annotations.coco.json``)          Roboflow COCO export)
``data.yaml``, or a folder holding one           :func:`read_yolo`
``file.jsonl``, or folder with ``<split>.jsonl`` :func:`read_jsonl` (detection, PaliGemma, grounding)
VOC root (``Annotations/`` + ``JPEGImages/``),   :func:`read_voc` (``ImageSets/Main/<split>.txt``
  or ``annotations/`` + ``images/`` of XML         when present)
``file.csv`` (``filename,width,height,class,``   :func:`read_csv`
  ``xmin,ymin,xmax,ymax``)
Label Studio JSON export (a list of tasks)       :func:`read_label_studio`
``refs(unc).p`` / ``refs.json`` (+ ``instances.json`` beside it) :func:`read_refcoco`
``hf:<id or path>`` or a ``save_to_disk`` folder :func:`read_hf`
``sv.DetectionDataset`` (from Python)            :func:`read_supervision`
===============================================  ==============================================

Split names: ``val`` finds a split called ``val``, ``valid`` (Roboflow) or ``validation`` (Hugging
Face), and the other way round (:data:`SPLIT_ALIASES`). :func:`dataset_splits` says which splits a
spec holds — ``None`` for a dataset that is one set of images (a single annotation file); those are
split by :mod:`vlmdet.data.splits`, never scored on their own training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdet.data.readers.coco import read_coco
from vlmdet.data.readers.common import SPLIT_ALIASES, ReadOptions, split_names
from vlmdet.data.readers.csv_boxes import is_box_csv, read_csv
from vlmdet.data.readers.grounding import read_grounding, read_refcoco
from vlmdet.data.readers.hf import read_hf
from vlmdet.data.readers.jsonl import read_jsonl
from vlmdet.data.readers.labelstudio import is_label_studio, read_label_studio
from vlmdet.data.readers.sv_dataset import read_supervision
from vlmdet.data.readers.voc import read_voc, voc_layout, voc_splits
from vlmdet.data.readers.yolo import read_yolo
from vlmdet.data.sample import DataError, DetectionDataset

__all__ = [
    "ReadOptions",
    "SPLIT_ALIASES",
    "dataset_splits",
    "open_dataset",
    "read_coco",
    "read_csv",
    "read_label_studio",
    "read_voc",
    "read_yolo",
    "read_jsonl",
    "read_hf",
    "read_grounding",
    "read_refcoco",
    "read_supervision",
]

COCO_NAMES = ("annotations.json", "_annotations.coco.json", "instances.json")
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")
FORMATS_HINT = ("a COCO .json, a folder of splits, a YOLO data.yaml, a Pascal VOC folder (Annotations/ + JPEGImages/), "
                "a TFOD .csv, a Label Studio .json export, a .jsonl, or hf:<id>")


def _split_folder(path: Path, split: str) -> tuple[str, Path] | None:
    """The split's folder and COCO file in a folder of splits (``valid/_annotations.coco.json`` for ``val``)."""
    for name in split_names(split):
        for coco in COCO_NAMES:
            if (path / name / coco).is_file():
                return name, path / name / coco
    return None


def dataset_splits(spec: str | Path) -> list[str] | None:
    """The split names ``spec`` holds, or ``None`` when it is one set of images (a single annotation
    file, a VOC folder without ``ImageSets/Main``, ...) that vlmdet must split itself."""
    s = str(spec)
    if s.startswith("hf:") or (Path(s).is_dir() and ((Path(s) / "dataset_dict.json").is_file() or (Path(s) / "dataset_info.json").is_file())):
        return _hf_splits(s[3:] if s.startswith("hf:") else s)
    path = Path(s)
    if path.is_dir():
        found = [d.name for d in sorted(path.iterdir()) if d.is_dir() and any((d / c).is_file() for c in COCO_NAMES)]
        found += [f.stem for f in sorted(path.glob("*.jsonl")) if f.stem in SPLIT_NAMES]
        if found:
            return found
        if (path / "data.yaml").is_file():
            return dataset_splits(path / "data.yaml")
        layout = voc_layout(path)
        if layout is not None:
            return voc_splits(path) or None
        return None
    if path.suffix in (".yaml", ".yml") and path.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            return None  # read_yolo names the error
        return [k for k in ("train", "val", "test") if isinstance(cfg, dict) and cfg.get(k)] or None
    return None


def _hf_splits(source: str) -> list[str] | None:
    path = Path(source)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        import json

        return list(json.loads((path / "dataset_dict.json").read_text()).get("splits", [])) or None
    if path.is_dir():
        return None  # a single `Dataset.save_to_disk` folder: one set
    return None  # a hub id: its splits are only known online; read_hf names the missing one


def open_dataset(spec: str | Path, split: str = "train", options: ReadOptions | None = None, **kwargs: Any) -> DetectionDataset:
    """Read split ``split`` of the dataset named by ``spec`` (see the module table). A spec that is one
    set of images is read whole whatever ``split`` says: use :func:`vlmdet.data.splits.read_split`
    to get a held-out split of it."""
    s = str(spec)
    if s.startswith("hf:"):
        return read_hf(s[3:], split=_hf_split(s[3:], split), options=options, **kwargs)
    path = Path(s)
    if not path.exists():
        raise DataError(f"dataset not found: {path} ({FORMATS_HINT})")
    if path.is_dir():
        found = _split_folder(path, split)
        if found is not None:
            return read_coco(found[1], options=options, **kwargs)
        for name in split_names(split):
            if (path / f"{name}.jsonl").is_file():
                return read_jsonl(path / f"{name}.jsonl", options=options, **kwargs)
        if (path / "data.yaml").is_file():
            return read_yolo(path / "data.yaml", split=split, options=options)
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            return read_hf(path, split=_hf_split(str(path), split), options=options, **kwargs)
        layout = voc_layout(path)
        if layout is not None:
            return read_voc(path, split=split, options=options)
        have = dataset_splits(path) or []
        if have:
            raise DataError(f"{path}: no split {split!r} (it has: {', '.join(have)}). Pass the split's name (--split / train_split / eval_split)")
        raise DataError(
            f"{path}: no {split}/annotations.json, {split}.jsonl, data.yaml, datasets folder or Pascal VOC layout "
            "(Annotations/ + JPEGImages/, or annotations/ + images/) found. A VOC pair under other names is read from Python: "
            "read_voc('my_xml_folder', images='my_image_folder'); give a single annotation file by its path"
        )
    if path.suffix in (".yaml", ".yml"):
        return read_yolo(path, split=split, options=options)
    if path.suffix == ".jsonl":
        return read_jsonl(path, options=options, **kwargs)
    if path.suffix == ".csv":
        if not is_box_csv(path):
            raise DataError(f"{path}: a .csv dataset needs the header filename,width,height,class,xmin,ymin,xmax,ymax (TensorFlow Object Detection's CSV)")
        return read_csv(path, options=options, **kwargs)
    if path.name.startswith("refs") and path.suffix in (".p", ".json"):
        return read_refcoco(path, path.parent / "instances.json", kwargs.pop("images", path.parent / "images"), split=split, options=options)
    if path.suffix == ".json":
        if is_label_studio(path):
            return read_label_studio(path, options=options, **kwargs)
        return read_coco(path, options=options, **kwargs)
    raise DataError(f"{path}: unknown dataset format ({FORMATS_HINT})")


def _hf_split(source: str, split: str) -> str:
    """``val`` for a ``datasets`` folder whose split is called ``validation`` (and so on)."""
    have = _hf_splits(source)
    if not have or split in have:
        return split
    return next((name for name in split_names(split) if name in have), split)
