"""Label Studio exports: "JSON" (a list of tasks) and "JSON_MIN" (one flat record per annotation).

JSON: a task has ``data`` (the image URL/path, under ``image`` or another key), ``annotations``
(``completions`` in old versions) and maybe ``predictions``: never read (guesses are not labels).
Of several annotations the first that is not cancelled (``was_cancelled``/``skipped``) is used, the
others ignored (counted). A task without one is not labelled yet, which is not "no objects": it is
left out and counted in the report ("tasks not labelled yet left out").

Boxes are ``rectanglelabels`` results (or ``labels`` results that carry a region, from a
``Rectangle`` + ``Labels`` config): ``value`` holds ``x, y, width, height`` in PERCENT (0..100) of
the image, top-left corner, and ``original_width``/``original_height`` give the image size in
pixels. They become ``xyxy`` pixels ``x1 = x / 100 * W, y1 = y / 100 * H, x2 = (x + width) / 100 * W,
y2 = (y + height) / 100 * H`` of that size (the declared size, checked against the file); without
the size, the percentages scale with the displayed image. A box with several labels becomes one box
per label. An annotation with no rectangles is a negative image; polygons, keypoints, choices and
other results are skipped. A rotated rectangle is an error: vlmdet trains axis-aligned boxes.

JSON_MIN: ``[{"image": ..., "id": ..., "label": [{x, y, width, height, rotation,
rectanglelabels, original_width, original_height}], ...}]`` (the list's key is the control tag's
name); a task annotated twice appears twice with one id, and the first record is used.

Image paths: Label Studio writes ``/data/upload/1/abc123de-photo.jpg``,
``/data/local-files/?d=folder/photo.jpg`` or a URL. Under ``images`` (default: the JSON's folder,
then its ``images/`` subfolder) the reader tries the path after ``?d=``, a plain path as written,
the basename, and the basename without the upload's 8-hex-digit prefix.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, malformed, make_sample
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
GEOMETRY = ("x", "y", "width", "height")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
REMOTE = ("http", "https", "s3", "gs", "gcs", "azure-blob")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None


def _is_task(item: dict) -> bool:
    return any(k in item for k in ("annotations", "completions", "data"))


def _region_labels(value: dict) -> Any:
    """The label list of a region value (``rectanglelabels``, or ``labels`` beside a geometry)."""
    if "rectanglelabels" in value:
        return value["rectanglelabels"]
    return value["labels"] if "labels" in value and all(g in value for g in GEOMETRY) else None


def _min_regions(item: dict) -> list[dict]:
    """The rectangles of a JSON_MIN record: the dicts of every list value that carry a region."""
    return [d for v in item.values() if isinstance(v, list) for d in v if isinstance(d, dict) and _region_labels(d) is not None]


def is_label_studio(path: str | Path) -> bool:
    """Whether ``path`` is a Label Studio JSON / JSON_MIN export (a list whose first item is a task
    with ``annotations``/``data``, or a flat record with rectangles or annotation fields)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4096).decode("utf-8-sig", errors="ignore").lstrip()[:1] != "[":
                return False  # COCO and most other JSON are objects: never parse them here
        data = _load(Path(path))
    except (OSError, DataError):
        return False
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return False
    first = data[0]
    return _is_task(first) or bool(_min_regions(first)) or ("annotation_id" in first and "annotator" in first)


def _number(v: Any, name: str, at: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(f"{at}: {name} {v!r} is not a finite number")
    return float(v)


def _size(r: dict, at: str) -> tuple[int, int] | None:
    ow, oh = r.get("original_width"), r.get("original_height")
    if ow is None and oh is None:
        return None
    w, h = _number(ow, "original_width", at), _number(oh, "original_height", at)
    if w != int(w) or h != int(h) or w <= 0 or h <= 0:
        raise DataError(f"{at}: original_width/original_height {ow!r}x{oh!r} are not a size in pixels")
    return int(w), int(h)


def _boxes(results: Any, where: str) -> tuple[np.ndarray, list[str], tuple[int, int] | None, int]:
    """Results -> (``(n, 4)`` xyxy in percent, labels, declared size or None, results skipped)."""
    if not isinstance(results, list):
        raise DataError(f"{where}: the annotation's result is not a list: {results!r:.80}")
    boxes, labels, sizes, skipped = [], [], set(), 0
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise DataError(f"{where}: result #{k} is not an object: {r!r:.80}")
        at = f"{where}, result {r.get('id', f'#{k}')}"
        value = r.get("value")
        names = _region_labels(value) if isinstance(value, dict) and r.get("type") in ("rectanglelabels", "labels") else None
        if names is None:
            skipped += 1  # polygons, keypoints, choices, unlabelled rectangles ...
            continue
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise DataError(f"{at}: a rectangle without a label ({names!r:.60}); label it in Label Studio or delete it")
        x, y, w, h = (_number(value.get(g), g, at) for g in GEOMETRY)
        for key, angle, what in (("rotation", value.get("rotation"), "rectangle"), ("image_rotation", r.get("image_rotation"), "image")):
            turn = _number(angle or 0, key, at) % 360
            if min(turn, 360 - turn) > 1e-6:
                raise DataError(
                    f"{at}: the {what} is rotated by {turn:g} degrees ({key}). vlmdet trains axis-aligned boxes, and a rotated "
                    "rectangle cannot become one without changing what it covers. Remove the rotation in Label Studio "
                    "(or re-annotate the box without it)"
                )
        sizes.add(_size(r, at))
        for name in names:
            boxes.append([x, y, x + w, y + h])
            labels.append(name.strip())
    known = sizes - {None}
    if len(known) > 1:
        raise DataError(f"{where}: results give different image sizes {sorted(known)}; one image has one size")
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, next(iter(known), None), skipped


def _image_ref(data: Any, where: str) -> str:
    if not isinstance(data, dict):
        raise DataError(f"{where}: 'data' is not an object: {data!r:.80}")
    if isinstance(data.get("image"), str) and data["image"]:
        return data["image"]
    for v in data.values():
        if isinstance(v, str) and (v.lower().split("?")[0].endswith(IMAGE_SUFFIXES) or v.startswith("/data/") or "://" in v):
            return v
    raise DataError(f"{where}: no image path in the task's data (keys: {', '.join(map(str, data))})")


def _resolve(ref: str, roots: list[Path], where: str) -> Path:
    """The local file for an image reference (tries listed in the module docstring)."""
    parsed = urlparse(ref)
    remote = parsed.scheme.lower() in REMOTE
    names = [unquote(d) for d in parse_qs(parsed.query).get("d", [])]
    local = unquote(parsed.path) if len(parsed.scheme) > 1 or ref.startswith("/data/") else ref  # a scheme, not a drive letter
    if not remote and not ref.startswith("/data/"):
        names.append(local)
    base = PurePosixPath(names[0] if names else local).name
    names.append(base)
    m = UPLOAD_PREFIX.match(base)
    if m:
        names.append(m.group(1))
    tried = []
    for name in dict.fromkeys(n for n in names if n):
        for root in roots:
            candidate = root / name
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    shown = (", ".join(tried[:6]) + (" ..." if len(tried) > 6 else "")) or "nothing"
    if remote:
        raise DataError(f"{where}: image {ref!r} is a URL and no local copy was found (tried {shown}). vlmdet reads images from disk: "
                        "download the images and pass images=<their folder>")
    raise DataError(f"{where}: image file not found for {ref!r} (tried {shown}); pass images=<the folder holding the images>")


def _annotation(task: dict, where: str) -> tuple[Any, int] | None:
    """The first annotation that is not cancelled: its result, and how many others were live."""
    anns = task.get("annotations", task.get("completions"))
    if anns is None:
        return None
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise DataError(f"{where}: 'annotations' is not a list of objects: {anns!r:.80}")
    live = [a for a in anns if not (a.get("was_cancelled") or a.get("skipped"))]
    return (live[0].get("result"), len(live) - 1) if live else None


def read_label_studio(path: str | Path, images: str | Path | None = None, options: ReadOptions | None = None) -> DetectionDataset:
    """Read a Label Studio JSON or JSON_MIN export (conventions in the module docstring).

    Boxes come out as ``xyxy`` float pixels of the displayed (EXIF-oriented) image. Classes are the
    sorted unique label names, unless ``options.classes`` closes the set.
    """
    opts = options or ReadOptions()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Label Studio export not found: {path}")
    tasks = _load(path)
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio JSON export is a list of tasks, got {type(tasks).__name__}")
    roots = [Path(images)] if images is not None else [path.parent, path.parent / "images"]
    report = ReadReport(source=str(path))
    samples, seen_classes, seen_ids, used_images = [], set(), set(), {}  # used_images: path -> task id
    for index, task in enumerate(tasks):
        task_id = task.get("id", f"#{index}") if isinstance(task, dict) else f"#{index}"
        where = f"{path}, task {task_id}"
        try:
            if not isinstance(task, dict):
                raise DataError(f"{where}: a task is an object, got {task!r:.80}")
            if task_id in seen_ids:
                if not _is_task(task):  # JSON_MIN: one more annotation of a task already read
                    report.extra_annotations += 1
                    continue
                raise DataError(f"{where}: the task id repeats; every task needs its own id")
            seen_ids.add(task_id)
            if _is_task(task):
                chosen = _annotation(task, where)
                if chosen is None:
                    report.unannotated += 1
                    continue
                results, others = chosen
                report.extra_annotations += others
                ref = _image_ref(task.get("data"), where)
            else:
                results = [{"type": "rectanglelabels", "value": d, **{k: d[k] for k in ("original_width", "original_height") if k in d}}
                           for d in _min_regions(task)]
                ref = _image_ref(task, where)
            boxes, labels, declared, skipped = _boxes(results, where)
            report.non_box_results += skipped
            seen_classes.update(labels)
            image_path = _resolve(ref, roots, where)
            if image_path in used_images:
                raise DataError(f"{where}: image {ref!r} resolves to {image_path}, as task {used_images[image_path]} does; "
                                "delete one task (two uploads of one name? keep Label Studio's upload names, abc123de-name.jpg, on disk)")
            used_images[image_path] = task_id
            scale = (declared[0], declared[1], declared[0], declared[1]) if declared else (1.0, 1.0, 1.0, 1.0)
            sample = make_sample(sample_id=f"{path.name}#{task_id}", where=where, image_path=image_path, boxes=boxes / 100.0 * np.array(scale),
                                 labels=labels, declared_wh=declared, normalized_fmt=None if declared else "xyxy", opts=opts, report=report)
            sample.meta["label_studio_task_id"] = task_id
            samples.append(sample)
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else sorted(seen_classes)
    return DetectionDataset(samples, classes, report, name=str(path))
