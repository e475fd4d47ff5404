"""Readers: every dataset format becomes a :class:`~vlmdet.data.sample.DetectionDataset` of Samples.

``open_dataset(spec, split)`` picks the reader from ``spec``:

=============================================  ==============================================
spec                                           reader
=============================================  ==============================================
``path/annotations.json`` (COCO)               :func:`read_coco`
folder with ``<split>/annotations.json``       :func:`read_coco` on that split (vlmdet synth,
  (or ``<split>/_annotations.coco.json``)        Roboflow COCO export)
``data.yaml``                                  :func:`read_yolo`
``file.jsonl``, or folder with ``<split>.jsonl`` :func:`read_jsonl` (detection, PaliGemma, grounding)
``refs(unc).p`` / ``refs.json`` (+ ``instances.json`` beside it) :func:`read_refcoco`
``hf:<id or path>`` or a ``save_to_disk`` folder :func:`read_hf`
=============================================  ==============================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdet.data.readers.coco import read_coco
from vlmdet.data.readers.common import ReadOptions
from vlmdet.data.readers.grounding import read_grounding, read_refcoco
from vlmdet.data.readers.hf import read_hf
from vlmdet.data.readers.jsonl import read_jsonl
from vlmdet.data.readers.yolo import read_yolo
from vlmdet.data.sample import DataError, DetectionDataset

__all__ = [
    "ReadOptions",
    "open_dataset",
    "read_coco",
    "read_yolo",
    "read_jsonl",
    "read_hf",
    "read_grounding",
    "read_refcoco",
]

COCO_NAMES = ("annotations.json", "_annotations.coco.json", "instances.json")


def open_dataset(spec: str | Path, split: str = "train", options: ReadOptions | None = None, **kwargs: Any) -> DetectionDataset:
    """Read split ``split`` of the dataset named by ``spec`` (see the module table)."""
    s = str(spec)
    if s.startswith("hf:"):
        return read_hf(s[3:], split=split, options=options, **kwargs)
    path = Path(s)
    if not path.exists():
        raise DataError(f"dataset not found: {path} (a COCO json, a folder of splits, data.yaml, .jsonl, or hf:<id>)")
    if path.is_dir():
        for name in COCO_NAMES:
            if (path / split / name).is_file():
                return read_coco(path / split / name, options=options, **kwargs)
        if (path / f"{split}.jsonl").is_file():
            return read_jsonl(path / f"{split}.jsonl", options=options, **kwargs)
        if (path / "data.yaml").is_file():
            return read_yolo(path / "data.yaml", split=split, options=options)
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            return read_hf(path, split=split, options=options, **kwargs)
        raise DataError(f"{path}: no {split}/annotations.json, {split}.jsonl, data.yaml or datasets folder found")
    if path.suffix in (".yaml", ".yml"):
        return read_yolo(path, split=split, options=options)
    if path.suffix == ".jsonl":
        return read_jsonl(path, options=options, **kwargs)
    if path.name.startswith("refs") and path.suffix in (".p", ".json"):
        return read_refcoco(path, path.parent / "instances.json", kwargs.pop("images", path.parent / "images"), split=split, options=options)
    if path.suffix == ".json":
        return read_coco(path, options=options, **kwargs)
    raise DataError(f"{path}: unknown dataset format (expected .json COCO, data.yaml, .jsonl, refs.p/json, or hf:<id>)")
