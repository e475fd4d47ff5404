"""YOLO (Ultralytics layout): ``data.yaml`` + ``images/`` + ``labels/*.txt`` (class cx cy w h, 0..1).

Written here rather than with ``supervision.DetectionDataset.from_yolo`` because vlmdet must name
the label file and line of a malformed row, count clipped boxes and reject class ids outside
``names`` — supervision's loader drops that information. Conventions and checks follow
Ultralytics (``check_det_dataset``, ``verify_image_label``):

* a label path swaps the last ``/images/`` for ``/labels/`` and the extension for ``.txt``; a
  missing label file is a negative image (counted in the report);
* a row is ``class cx cy w h``, normalised to 0..1; a row with more than 5 values is a polygon (its
  extent is the box). Coordinates above 1 ("non-normalized or out of bounds coordinates", e.g.
  pixels) and negative values are errors naming the file and line; exact duplicate rows are
  dropped and counted;
* ``names`` is a list or a mapping ``{0: a, 1: b}`` whose ids run 0..n-1 without gaps, and ``nc``,
  when given, equals its length;
* labels are in the EXIF-oriented frame (as Ultralytics and annotation tools show images);
* a split path that does not exist and starts with ``../`` is tried again without it, relative to
  the dataset folder (Ultralytics does this for Roboflow's ``train: ../train/images``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, make_sample, malformed, split_names
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport, UnknownClassError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _list_images(entry: str | list, root: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = (root / e) if not Path(e).is_absolute() else Path(e)
        if not p.exists() and str(e).startswith("../") and (root / str(e)[3:]).exists():
            # Roboflow's exports write `train: ../train/images` beside data.yaml; Ultralytics'
            # check_det_dataset retries such a path without its leading `../`, and so do we.
            p = root / str(e)[3:]
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    images.append(q if q.is_absolute() else (root / q))
        else:
            also = f"; also tried {root / str(e)[3:]}, as Ultralytics does" if str(e).startswith("../") else ""
            raise DataError(f"YOLO split entry {e!r} (resolved to {p}{also}) is neither an image folder nor a .txt list")
    return images


def _parse_labels(path: Path, names: list[str], report: ReadReport) -> tuple[np.ndarray, list[str]]:
    boxes, labels = [], []
    if not path.is_file():
        report.no_label_file += 1
        return np.zeros((0, 4)), []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the label file ({exc.__class__.__name__}: {exc})") from None
    seen: set[tuple[float, ...]] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r}. Each row is 'class cx cy w h' (normalised 0..1)") from None
        if not all(np.isfinite(values)):
            raise DataError(f"{where}: not finite numbers: {line.strip()!r}")
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            raise DataError(f"{where}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 ...' (polygon), got {len(values)} values")
        cls = values[0]
        if cls != int(cls) or not (0 <= int(cls) < len(names)):
            raise UnknownClassError(f"{where}: class id {fields[0]} is not in data.yaml names (0..{len(names) - 1}); fix the label or add the name")
        coords = values[1:]
        if max(coords) > 1.0:
            raise DataError(
                f"{where}: non-normalized or out of bounds coordinates {[v for v in coords if v > 1.0][:4]} in {line.strip()!r}: "
                "YOLO rows are 'class cx cy w h' divided by the image width and height (0..1). Pixels? Divide them by the image size"
            )
        if min(coords) < 0.0:
            raise DataError(f"{where}: negative label values {[v for v in coords if v < 0][:4]} in {line.strip()!r}: YOLO coordinates lie in 0..1")
        key = tuple(values)
        if key in seen:
            report.duplicate_rows += 1
            continue
        seen.add(key)
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:
            xs, ys = values[1::2], values[2::2]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        labels.append(names[int(cls)])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), labels


def _class_names(cfg: dict, yaml_path: Path) -> list[str]:
    """``names`` as a list indexed by class id — Ultralytics' ``check_class_names`` rules."""
    names = cfg.get("names")
    if isinstance(names, dict):
        try:
            ids = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{yaml_path}: 'names' keys must be class ids 0..n-1, got {list(names)[:5]}") from None
        n = len(ids)
        if ids and (min(ids) != 0 or max(ids) != n - 1):
            missing = sorted(set(range(max(ids) + 1)) - set(ids))[:5]
            raise DataError(
                f"{yaml_path}: a {n}-class dataset needs class ids 0-{n - 1} in 'names', but they run {min(ids)}-{max(ids)}"
                + (f" (missing: {missing})" if missing else "") + ". Number the classes without gaps, and the label files with them"
            )
        names = [ids[i] for i in range(n)]
    if not names or not isinstance(names, (list, tuple)):
        raise DataError(f"{yaml_path}: no 'names' list of classes")
    if "nc" in cfg and cfg["nc"] != len(names):
        raise DataError(f"{yaml_path}: 'names' has {len(names)} classes but 'nc: {cfg['nc']}'; they must match")
    return [str(n).strip() for n in names]


def read_yolo(data_yaml: str | Path, split: str = "train", options: ReadOptions | None = None) -> DetectionDataset:
    """Read split ``split`` (``train``/``val``/``test``) of an Ultralytics-style YOLO dataset."""
    opts = options or ReadOptions()
    yaml_path = Path(data_yaml)
    if not yaml_path.is_file():
        raise DataError(f"YOLO data.yaml not found: {yaml_path}")
    try:
        cfg = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DataError(f"{yaml_path}: invalid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{yaml_path}: a YOLO data.yaml is a mapping with names and train/val paths, got {type(cfg).__name__}")
    names = _class_names(cfg, yaml_path)
    split = next((name for name in split_names(split) if name in cfg), split)
    if split not in cfg:
        raise DataError(f"{yaml_path}: no '{split}' split (has: {', '.join(k for k in ('train', 'val', 'test') if k in cfg)})")
    # `path:` is the dataset root, relative to data.yaml's folder when relative; without it, that folder
    root = yaml_path.parent / cfg["path"] if cfg.get("path") else yaml_path.parent
    report = ReadReport(source=f"{yaml_path} [{split}]")
    samples = []
    for image in _list_images(cfg[split], root):
        label_file = _label_path(image)
        where = f"{label_file} (image {image})"
        try:
            rel_boxes, labels = _parse_labels(label_file, names, report)
            samples.append(
                make_sample(
                    sample_id=f"{split}/{image.name}",
                    where=where,
                    image_path=image,
                    boxes=rel_boxes,
                    labels=labels,
                    normalized_fmt="xyxy",
                    opts=opts,
                    report=report,
                )
            )
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else names
    return DetectionDataset(samples, classes, report, name=str(yaml_path))
