"""supervision's ``DetectionDataset`` (the object users of supervision already hold) -> vlmdet.

``sv.DetectionDataset`` keeps, per image path, an ``sv.Detections`` whose ``xyxy`` are pixels of the
image as supervision loads it (``cv2.imread``, which applies EXIF orientation) and whose
``class_id`` index ``dataset.classes``. vlmdet shows the model the same EXIF-oriented image, so the
boxes are taken as they are. In-memory images (supervision's deprecated ``dict`` form) are BGR arrays, OpenCV's order;
they are turned into RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, make_sample, malformed
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport, Sample, check_classes, clean_boxes


def read_supervision(dataset: Any, options: ReadOptions | None = None, name: str = "supervision") -> DetectionDataset:
    """Read an ``sv.DetectionDataset`` (boxes ``xyxy`` pixels, ``class_id`` into ``dataset.classes``)."""
    opts = options or ReadOptions()
    classes = [str(c).strip() for c in dataset.classes]
    report = ReadReport(source=f"{name} DetectionDataset")
    samples: list[Sample] = []
    in_memory = getattr(dataset, "_images_in_memory", None) or {}
    for k, path in enumerate(dataset.image_paths):
        where = f"{name} DetectionDataset image {k} ({path})"
        try:
            det = dataset.annotations[path]
            ids = np.zeros(0, dtype=int) if det.class_id is None else np.asarray(det.class_id).reshape(-1)
            if det.class_id is None and len(det):
                raise DataError(f"{where}: {len(det)} boxes without class_id")
            labels = [classes[int(i)] for i in ids]
            boxes = np.asarray(det.xyxy, dtype=np.float64).reshape(-1, 4)
            if path in in_memory:
                samples.append(_in_memory_sample(k, path, in_memory[path], boxes, labels, where, opts, report))
            else:
                samples.append(make_sample(sample_id=f"sv/{k}", where=where, image_path=Path(path), boxes=boxes, labels=labels, opts=opts, report=report))
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:
            handle(malformed(exc, where), where, opts, report)
    return DetectionDataset(samples, list(opts.classes) if opts.classes is not None else classes, report, name=name)


def _in_memory_sample(k: int, path: str, bgr: np.ndarray, boxes: np.ndarray, labels: list[str], where: str, opts: ReadOptions, report: ReadReport) -> Sample:
    arr = np.asarray(bgr)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(f"{where}: an in-memory image must be an (h, w, 3) uint8 BGR array, got {arr.shape} {arr.dtype}")
    image = Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]))
    check_classes(labels, opts.classes, where)
    keep = clean_boxes(boxes, image.size, report)
    report.images += 1
    report.boxes += int(keep.sum())
    return Sample(id=f"sv/{k}", image_wh=image.size, boxes=boxes[keep], labels=[lb for lb, kk in zip(labels, keep) if kk],
                  source=where, image_loader=lambda: image)
