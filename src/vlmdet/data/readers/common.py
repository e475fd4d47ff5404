"""What every reader shares: options, the bad-input policy, and turning raw rows into Samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vlmdet.data.images import exif_boxes_to_display, probe_image
from vlmdet.data.sample import SKIP_HINT, DataError, ReadReport, Sample, UnknownClassError, check_classes, clean_boxes

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]

# One split, several names: Roboflow exports call the evaluation split `valid`, Hugging Face `validation`.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "val": ("val", "valid", "validation"),
    "valid": ("valid", "val", "validation"),
    "validation": ("validation", "val", "valid"),
}


def split_names(split: str) -> tuple[str, ...]:
    """``split`` and the other names the same split goes by, in the order they are tried."""
    return SPLIT_ALIASES.get(split, (split,))


@dataclass
class ReadOptions:
    """How strict a read is.

    Attributes:
        on_error: ``"raise"`` (default): a missing/corrupt image or malformed record stops the read
            with an error naming the file and line/id. ``"skip"``: the sample is skipped, counted,
            and listed in the report.
        classes: a closed class set; a label outside it is an error (never skipped: it is a
            config mistake, not a bad file). ``None`` = classes come from the data.
        verify_images: decode every image while reading (catches truncated files up front).
        exif: ``"auto"``: show images EXIF-oriented; boxes are taken to be in the frame whose size
            the file declares (COCO ``width``/``height``) and moved when that is the raw frame.
            ``"ignore"``: use raw pixels and never rotate.
    """

    on_error: Literal["raise", "skip"] = "raise"
    classes: Sequence[str] | None = None
    verify_images: bool = True
    exif: Literal["auto", "ignore"] = "auto"

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.exif not in ("auto", "ignore"):
            raise ValueError(f"exif must be 'auto' or 'ignore', got {self.exif!r}")


def image_beside(annotation_file: Path, images: Path | None, file_name: str) -> Path:
    """Where an annotation file's image is: under ``images`` when given, else beside the file, then in
    an ``images/`` folder beside it (COCO, CSV exports put it in either place)."""
    if images is not None:
        return images / file_name
    for candidate in (annotation_file.parent / file_name, annotation_file.parent / "images" / file_name):
        if candidate.exists():
            return candidate
    return annotation_file.parent / file_name


def to_xyxy(boxes: np.ndarray, fmt: str, scale_wh: tuple[float, float] | None = None) -> np.ndarray:
    """Convert ``(n, 4)`` boxes in ``fmt`` (optionally normalised by ``scale_wh``) to xyxy pixels."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    if scale_wh is not None:
        b *= [scale_wh[0], scale_wh[1], scale_wh[0], scale_wh[1]]
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)
    if fmt == "cxcywh":
        return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], axis=1)
    raise ValueError(f"unknown box format {fmt!r}; use xyxy, xywh or cxcywh")


def make_sample(
    *,
    sample_id: str,
    where: str,
    image_path: Path,
    boxes: np.ndarray,
    labels: list[str],
    opts: ReadOptions,
    report: ReadReport,
    iscrowd: np.ndarray | None = None,
    declared_wh: tuple[int, int] | None = None,
    normalized_fmt: str | None = None,
    phrase: str | None = None,
    box_meta: dict[str, np.ndarray] | None = None,
) -> Sample:
    """Probe the image, put boxes in the displayed frame, clip/drop, check classes -> Sample.

    ``normalized_fmt``: boxes are relative (0..1) in this format and scale with the displayed image.
    ``box_meta``: per-box flags (e.g. VOC ``difficult``), ``(n,)`` arrays kept beside the boxes that
    survive cleaning, stored in ``Sample.meta``.
    Raises :class:`DataError`; the caller decides whether to skip.
    """
    info = probe_image(image_path, where, verify=opts.verify_images)
    exif = opts.exif == "auto"
    display_wh = info.display_wh if exif else info.raw_wh
    check_classes(labels, opts.classes, where)
    if normalized_fmt is not None:
        boxes = to_xyxy(boxes, normalized_fmt, scale_wh=display_wh)
    else:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        if declared_wh is not None and tuple(declared_wh) != tuple(display_wh):
            if exif and tuple(declared_wh) == tuple(info.raw_wh):
                # Annotated on the raw pixels of an EXIF-rotated file: rotate the boxes with the image.
                boxes = exif_boxes_to_display(boxes, info.orientation, info.raw_wh)
                report.exif_transformed += 1
            else:
                raise DataError(
                    f"{where}: the annotation says the image is {declared_wh[0]}x{declared_wh[1]} but {image_path} is "
                    f"{display_wh[0]}x{display_wh[1]}" + (f" (raw {info.raw_wh[0]}x{info.raw_wh[1]}, EXIF orientation {info.orientation})" if info.orientation != 1 else "")
                    + ". The file does not match its annotation: fix width/height or the image."
                )
    crowd = np.zeros(len(boxes), dtype=bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool)
    keep = clean_boxes(boxes, display_wh, report)
    boxes, crowd = boxes[keep], crowd[keep]
    labels = [label for label, k in zip(labels, keep) if k]
    meta = {name: np.asarray(values)[keep] for name, values in (box_meta or {}).items()}
    report.images += 1
    report.boxes += len(boxes)
    report.crowd += int(crowd.sum())
    return Sample(
        id=sample_id,
        image_wh=display_wh,
        boxes=boxes,
        labels=labels,
        iscrowd=crowd,
        phrase=phrase,
        source=where,
        image_path=image_path,
        exif=exif,
        meta=meta,
    )


# Errors a record of the wrong shape raises deep inside a reader (a string where a list belongs, a
# missing key): each becomes a DataError naming the file and record, under the same policy.
MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)


def malformed(exc: Exception, where: str) -> DataError:
    return DataError(f"{where}: malformed record ({exc.__class__.__name__}: {exc})")


def handle(exc: DataError, where: str, opts: ReadOptions, report: ReadReport) -> None:
    """The bad-input policy: raise (the message offers the skip option), or count a skip with its
    reason. An unknown class is never skipped: it is a config mistake, not a bad file."""
    if isinstance(exc, UnknownClassError):
        raise exc
    if opts.on_error == "raise":
        raise DataError(f"{str(exc).rstrip('. ')}; {SKIP_HINT}") from None
    report.add_skip(where, str(exc))
