"""The one sample type every reader produces, and the report of what reading had to fix.

A :class:`Sample` is an image plus boxes as ``xyxy`` float pixels of the *original* image (after
EXIF orientation is applied, i.e. the image as a viewer shows it), their class names, and
optionally a referring phrase for grounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


# What every "bad image / bad record" error offers besides fixing the file: the option that exists
# in the CLI and in configs (readers call it ``ReadOptions(on_error="skip")``).
SKIP_HINT = "or pass --on-bad-data skip (config: on_bad_data=skip) to skip such images and count them"


class DataError(ValueError):
    """Bad input data. The message names the file, the sample and the fix."""


class UnknownClassError(DataError):
    """A label outside a closed class set: a configuration mistake, never skipped silently."""


@dataclass
class Sample:
    """One image and its annotation.

    Attributes:
        id: stable identifier, unique within its dataset (e.g. ``"val/annotations.json#17"``).
        image_wh: ``(width, height)`` of the image as the model will see it (EXIF applied).
        boxes: ``(n, 4)`` float64 ``xyxy`` pixels of that image.
        labels: ``n`` class names (for grounding: the phrase, once per box).
        iscrowd: ``(n,)`` bool; COCO crowd regions — ignored by metrics, never trained as targets.
        phrase: the referring expression of a grounding sample, else ``None``.
        source: where it came from, for error messages (file and line / image id).
        image_path: file to load; or ``image_loader`` for in-memory data (HF datasets).
        exif: whether to apply EXIF orientation when loading (readers decide; default yes).
        meta: reader-specific extras; per-box flags are ``(n,)`` arrays aligned with ``boxes``
            (VOC: ``difficult``, ``truncated``; COCO: ``coco_image_id``).
    """

    id: str
    image_wh: tuple[int, int]
    boxes: np.ndarray
    labels: list[str]
    iscrowd: np.ndarray | None = None
    phrase: str | None = None
    source: str = ""
    image_path: Path | None = None
    image_loader: Callable[[], Image.Image] | None = field(default=None, repr=False)
    exif: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if self.iscrowd is None:
            self.iscrowd = np.zeros(len(self.boxes), dtype=bool)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd)):
            raise DataError(f"{self.source or self.id}: {len(self.boxes)} boxes, {len(self.labels)} labels, {len(self.iscrowd)} crowd flags")

    def load_image(self) -> Image.Image:
        """The RGB image, EXIF orientation applied (when ``exif``), sized ``image_wh``."""
        from vlmdet.data.images import open_rgb, to_rgb

        if self.image_loader is not None:
            img = to_rgb(self.image_loader(), self.source or self.id)
        elif self.image_path is not None:
            img = open_rgb(self.image_path, exif=self.exif)
        else:
            raise DataError(f"{self.source or self.id}: the sample has neither an image file nor a loader")
        if img.size != tuple(self.image_wh):
            raise DataError(
                f"{self.source or self.id}: image is {img.size[0]}x{img.size[1]} but was read as "
                f"{self.image_wh[0]}x{self.image_wh[1]}; the file changed after reading — read the dataset again"
            )
        return img

    @property
    def ignored(self) -> np.ndarray:
        """``(n,)`` bool: boxes that scoring ignores — crowd regions (as COCOeval does) and VOC
        ``difficult`` objects (as the VOC protocol does: neither a hit nor a miss). Difficult objects
        are still trained."""
        difficult = self.meta.get("difficult")
        if difficult is None:
            return self.iscrowd
        return self.iscrowd | np.asarray(difficult, dtype=bool).reshape(-1)

    @property
    def targets(self) -> tuple[np.ndarray, list[str]]:
        """Boxes and labels a model is trained to write: everything but crowd regions."""
        keep = ~self.iscrowd
        return self.boxes[keep], [label for label, k in zip(self.labels, keep) if k]


@dataclass
class ReadReport:
    """What a reader fixed, dropped or skipped; printed at the end of every read."""

    source: str = ""
    images: int = 0
    boxes: int = 0
    clipped: int = 0
    dropped_empty: int = 0
    crowd: int = 0
    exif_transformed: int = 0
    no_label_file: int = 0  # YOLO images without a label file (read as negatives)
    duplicate_rows: int = 0  # YOLO label rows repeated exactly (dropped, as Ultralytics does)
    orphan_annotations: int = 0  # COCO annotations whose image_id is in no image (dropped; on_error=skip)
    non_box_results: int = 0  # Label Studio results that are no rectangle (polygons, keypoints, choices)
    extra_annotations: int = 0  # Label Studio: further annotations of a task (the first not cancelled is used)
    unannotated: int = 0  # Label Studio tasks not labelled yet (or every annotation cancelled): left out
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line notes on what reading decided (e.g. a placeholder category dropped)

    COUNTS = (
        ("clipped", "boxes clipped to the image"),
        ("dropped_empty", "zero/negative-area boxes dropped"),
        ("crowd", "crowd regions (ignored as targets)"),
        ("exif_transformed", "images whose boxes were rotated with their EXIF orientation"),
        ("no_label_file", "images without a label file (read as negatives)"),
        ("duplicate_rows", "duplicate label rows dropped"),
        ("orphan_annotations", "annotations pointing to no image dropped"),
        ("non_box_results", "non-rectangle results skipped (polygons, keypoints, choices)"),
        ("extra_annotations", "further annotations of a task ignored (the first not cancelled is used)"),
        ("unannotated", "tasks not labelled yet left out"),
    )

    def add_skip(self, where: str, reason: str) -> None:
        self.skipped.append((where, reason))

    def merge(self, other: "ReadReport") -> None:
        for name in ("images", "boxes", *(n for n, _ in self.COUNTS)):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.extend(other.skipped)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def summary(self, max_skips: int = 5) -> str:
        parts = [f"{self.images} images", f"{self.boxes} boxes"]
        for name, text in self.COUNTS:
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {text}")
        text = f"{self.source}: " + "; ".join(parts)
        text += "".join(f"\n  note: {note}" for note in self.notes)
        if self.skipped:
            text += f"; {len(self.skipped)} images skipped:"
            shown = self.skipped[:max_skips]
            text += "".join(f"\n  - {reason}" for _, reason in shown)
            if len(self.skipped) > len(shown):
                text += f"\n  ... and {len(self.skipped) - len(shown)} more"
        return text


@dataclass
class DetectionDataset:
    """Samples of one split plus its class list (closed-set order) and read report.

    ``category_ids`` maps each class to the id a COCO results file must use for it: the COCO file's
    own category ids when the data came from one (real COCO numbers 1..90 with gaps), else 1..n in
    class order. Every writer of COCO results takes ids from here.
    """

    samples: list[Sample]
    classes: list[str]
    report: ReadReport = field(default_factory=ReadReport)
    name: str = ""
    category_ids: dict[str, int] = field(default_factory=dict)
    split_info: dict[str, Any] | None = None  # how vlmdet made this split from a one-set dataset (vlmdet.data.splits)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = {name: i + 1 for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def subset(self, indices: Sequence[int]) -> "DetectionDataset":
        return DetectionDataset([self.samples[i] for i in indices], list(self.classes), self.report, self.name, dict(self.category_ids), self.split_info)


def clean_boxes(
    boxes: np.ndarray,
    image_wh: tuple[int, int],
    report: ReadReport,
) -> np.ndarray:
    """Clip ``(n, 4)`` xyxy boxes to the image; return the keep-mask of boxes with positive area.

    Boxes partly outside are clipped (counted in ``report.clipped``); zero/negative-area boxes,
    including those entirely outside, are dropped (``report.dropped_empty``).
    """
    w, h = image_wh
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, w)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, h)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = keep & (np.abs(clipped - np.where(np.isfinite(boxes), boxes, 0)) > 1e-9).any(axis=1)
    report.clipped += int(changed.sum())
    report.dropped_empty += int((~keep).sum())
    boxes[:] = np.where(np.isfinite(boxes), clipped, 0)
    return keep


def check_classes(labels: Sequence[str], classes: Sequence[str] | None, where: str) -> None:
    """Closed-set runs: every label must be one of ``classes``, or a clear error names it."""
    if classes is None:
        return
    known = set(classes)
    for label in labels:
        if label not in known:
            raise UnknownClassError(
                f"{where}: unknown class {label!r} (closed set: {', '.join(classes)}). "
                f"Add it to `classes` in your config, or fix the annotation."
            )
