"""Box CSV, as TensorFlow Object Detection API tutorials write it (``generate_tfrecord.py`` input,
Roboflow's "Tensorflow Object Detection CSV" export)::

    filename,width,height,class,xmin,ymin,xmax,ymax
    a.jpg,640,480,cat,12,30,200,310

One row per box, in absolute pixels ``xyxy`` of the image ``width`` x ``height`` (the frame the
boxes were drawn in; :func:`make_sample` refuses a file of another size). Columns are read by
header name, in any order; extra columns are ignored. Rows of one ``filename`` make one sample, in
the order the file first names them. A row with an empty ``class`` and empty coordinates is an
image without boxes (a negative), as some exporters write it.

Errors name the file and line (``train_labels.csv:17: xmin 'abc' is not a number``). A bad row
spoils its whole image: with ``on_error="skip"`` the image is skipped (never read with a box
missing, which would teach the model that object is background).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, image_beside, malformed, make_sample
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport

COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _Image:
    """The rows of one filename: boxes in xyxy pixels of ``wh``."""

    first_line: int
    wh: tuple[int, int] | None = None
    wh_line: int = 0
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    error: DataError | None = None


def _header(fieldnames: list[str] | None) -> dict[str, str]:
    """Normalised column name -> the name as written (whitespace and case do not matter)."""
    return {str(name).strip().lower(): name for name in fieldnames or [] if name is not None}


def is_box_csv(path: str | Path) -> bool:
    """Whether ``path``'s first line is a box-CSV header (all of :data:`COLUMNS`, any order)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(64 * 1024).decode("utf-8-sig")
        names = next(csv.reader([first]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return set(COLUMNS) <= set(_header(names))


def _number(row: dict, col: str, name: str, where: str) -> float:
    text = (row.get(col) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {name} {text!r} is not a finite number")
    return value


def _size(row: dict, cols: dict[str, str], where: str) -> tuple[int, int]:
    wh = []
    for name in ("width", "height"):
        value = _number(row, cols[name], name, where)
        if value != int(value) or value <= 0:
            raise DataError(f"{where}: {name} {row[cols[name]].strip()!r} is not a positive whole number of pixels")
        wh.append(int(value))
    return wh[0], wh[1]


def _parse_row(row: dict, cols: dict[str, str], where: str) -> tuple[tuple[int, int], list[float] | None, str | None]:
    """One row -> (declared size, xyxy box or None for a negative row, class or None)."""
    if None in row:  # more fields than the header names
        raise DataError(f"{where}: more fields than the header has columns; a class name with a comma must be quoted")
    if any(row.get(cols[c]) is None for c in COLUMNS):
        raise DataError(f"{where}: fewer fields than the header ({', '.join(COLUMNS)})")
    wh = _size(row, cols, where)
    label = row[cols["class"]].strip()
    empty = [c for c in COORDS if not row[cols[c]].strip()]
    if not label and len(empty) == len(COORDS):
        return wh, None, None  # a negative image
    if not label:
        raise DataError(f"{where}: a box without a class; leave class and all of xmin,ymin,xmax,ymax empty for an image without boxes")
    if empty:
        raise DataError(f"{where}: class {label!r} but no {', '.join(empty)}")
    x1, y1, x2, y2 = (_number(row, cols[c], c, where) for c in COORDS)
    for lo, hi, a, b in (("xmin", "xmax", x1, x2), ("ymin", "ymax", y1, y2)):
        if a > b:
            raise DataError(f"{where}: {lo} {a:g} > {hi} {b:g}; columns are xmin,ymin,xmax,ymax in pixels (corners, not width/height?)")
    return wh, [x1, y1, x2, y2], label


def _rows(path: Path) -> csv.DictReader:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the CSV as UTF-8") from None
    return csv.DictReader(io.StringIO(text, newline=""))


def _group_rows(reader: csv.DictReader, cols: dict[str, str], path: Path, opts: ReadOptions, report: ReadReport) -> tuple[dict[str, _Image], set[str]]:
    """Rows -> one :class:`_Image` per filename (file order). A bad row raises (strict) or marks its
    image bad, to be skipped whole; a bad row without a filename is a skip of its own."""
    groups: dict[str, _Image] = {}
    seen_classes: set[str] = set()
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
        if all(isinstance(v, str) and not v.strip() for v in row.values()):
            continue  # a line of blanks or bare commas
        line = reader.line_num
        where = f"{path}:{line}"
        filename = str(row.get(cols["filename"]) or "").strip()
        try:
            if not filename:
                raise DataError(f"{where}: no filename")
            wh, box, label = _parse_row(row, cols, where)
            group = groups.setdefault(filename, _Image(line))
            if group.wh is None:
                group.wh, group.wh_line = wh, line
            elif group.wh != wh:
                raise DataError(
                    f"{where}: {filename} is {wh[0]}x{wh[1]} here but {group.wh[0]}x{group.wh[1]} at line {group.wh_line}; "
                    "one image has one size: fix width/height"
                )
            if box is not None and label is not None:
                group.boxes.append(box)
                group.labels.append(label)
                seen_classes.add(label)
        except (DataError, *MALFORMED) as exc:
            err = exc if isinstance(exc, DataError) else malformed(exc, where)
            if opts.on_error == "raise" or not filename:
                handle(err, where, opts, report)  # raises, or counts a row that no image owns
                continue
            group = groups.setdefault(filename, _Image(line))
            group.error = group.error or err
    return groups, seen_classes


def read_csv(path: str | Path, images: str | Path | None = None, options: ReadOptions | None = None) -> DetectionDataset:
    """Read a box CSV (layout in the module docstring).

    Args:
        path: the CSV.
        images: folder ``filename`` is relative to; default: the CSV's folder, then its ``images/``
            subfolder.
        options: bad-input policy (:class:`ReadOptions`). Classes are the sorted unique names of
            the file, unless ``options.classes`` closes the set.

    Returns samples with boxes as ``xyxy`` float pixels of the displayed (EXIF-oriented) image.
    """
    opts = options or ReadOptions()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"box CSV not found: {path}")
    img_dir = Path(images) if images is not None else None
    report = ReadReport(source=str(path))
    reader = _rows(path)
    try:
        cols = _header(reader.fieldnames)
    except csv.Error as exc:
        raise DataError(f"{path}:1: cannot parse the header ({exc})") from None
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        found = ",".join(str(n) for n in reader.fieldnames or []) or "(empty file)"
        raise DataError(f"{path}: no column {', '.join(missing)}. The header is {found!r}; expected {','.join(COLUMNS)!r} (any order, extra columns ignored)")
    groups, seen_classes = _group_rows(reader, cols, path, opts, report)
    samples = []
    for filename, group in groups.items():
        where = f"{path}:{group.first_line} ({filename})"
        try:
            if group.error is not None:
                raise group.error
            samples.append(
                make_sample(
                    sample_id=f"{path.name}#{filename}",
                    where=where,
                    image_path=image_beside(path, img_dir, filename),
                    boxes=np.array(group.boxes, dtype=np.float64).reshape(-1, 4),
                    labels=list(group.labels),
                    declared_wh=group.wh,
                    opts=opts,
                    report=report,
                )
            )
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:
            handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else sorted(seen_classes)
    return DetectionDataset(samples, classes, report, name=str(path))
