"""Pascal VOC XML: ``Annotations/*.xml`` + ``JPEGImages/`` (+ ``ImageSets/Main/<split>.txt``), or
any folder of XML files beside an image folder (LabelImg, CVAT and Roboflow "VOC" exports).

Coordinates. ``<bndbox>`` holds 1-based, inclusive pixel indices: ``xmin=1, xmax=W`` covers the
whole width. vlmdet boxes are ``xyxy`` float pixels with edges on pixel boundaries (pixel ``i``
spans ``[i, i+1)``), so a box becomes ``[xmin - 1, ymin - 1, xmax, ymax]``: only the minima move.
This is exactly what detectron2 (``pascal_voc.py``: ``bbox[0] -= 1.0; bbox[1] -= 1.0``) and
supervision (``detections_from_xml_obj``: ``xyxy[:, :2] -= 1``) do, so vlmdet reads the same boxes
as both. Float coordinates ("123.5", written by some exporters) get the same shift. Hence
``xmin == xmax`` is a one-pixel-wide box (kept, as both tools keep it), and a box only becomes
empty once clipped to the image (outside it, or at index 0): such boxes are dropped and counted.
``xmin > xmax`` (or ``ymin > ymax``) is a malformed record naming the file and object
(supervision silently swaps the corners instead; vlmdet does not guess).

Boxes are in the frame ``<size>`` declares; with EXIF orientation the usual rules of
:func:`~vlmdet.data.readers.common.make_sample` apply. A ``<size>`` of 0x0 or none at all (some
tools write zeros) means "unknown" and is not checked.

Per object: ``name`` (stripped) is the class; ``difficult`` and ``truncated`` (0/1, missing = 0)
are kept as per-box bool arrays in ``Sample.meta`` (difficult objects are trained but ignored by
scoring, see ``Sample.ignored``), and ``occluded`` too when a file has it.

The image is ``<filename>`` inside the image folder; if that is not a file, the XML's stem (then
the filename's stem) with a common image suffix; ``<path>`` (often an annotator's own disk) only as
a last resort. The class list is ``sorted(set(names))`` of the samples read (deterministic,
independent of file order) unless ``options.classes`` is given. XML is parsed with ``defusedxml``
(entity declarations are refused: no entity-expansion bombs).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, make_sample, malformed, split_names
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport

try:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring as _fromstring
except ImportError:  # pragma: no cover - defusedxml comes with supervision; without it, entities are refused by hand
    DefusedXmlException, _fromstring = None, ET.fromstring

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")  # tried after <filename>
LAYOUTS = (("Annotations", "JPEGImages"), ("annotations", "images"))
FLAGS = ("difficult", "truncated", "occluded")


def _pair(folder: Path) -> tuple[Path, Path] | None:
    for ann, img in LAYOUTS:
        if (folder / ann).is_dir() and (folder / img).is_dir():
            return folder / ann, folder / img
    return None


def _xml_files(ann_dir: Path) -> list[Path]:
    return sorted(p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file())


def voc_layout(folder: Path) -> tuple[Path, Path] | None:
    """``(annotations_dir, images_dir)`` when ``folder`` holds ``Annotations/`` + ``JPEGImages/`` or
    ``annotations/`` + ``images/`` with ``.xml`` files in the annotations folder, else ``None``."""
    folder = Path(folder)
    pair = _pair(folder) if folder.is_dir() else None
    return pair if pair is not None and _xml_files(pair[0]) else None


def voc_splits(root: Path) -> list[str] | None:
    """The split names of ``ImageSets/Main`` (``None`` without it): ``<class>_<split>.txt`` files
    list "id  1" per class and are not splits."""
    main = Path(root) / "ImageSets" / "Main"
    if not main.is_dir():
        return None
    stems = {p.stem for p in main.glob("*.txt")}
    return sorted(s for s in stems if not any(t != s and s.endswith(f"_{t}") for t in stems))


def _split_ids(root: Path, split: str, report: ReadReport) -> list[str] | None:
    """Ids listed in ``ImageSets/Main/<split>.txt``; ``None`` when the root has no ImageSets/Main."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        return None
    path = next((main / f"{n}.txt" for n in split_names(split) if (main / f"{n}.txt").is_file()), main / f"{split}.txt")
    if not path.is_file():
        splits = voc_splits(root) or []
        raise DataError(f"{main}: no {split}.txt split file (splits here: {', '.join(splits) or 'none'}); pick one of them as the split")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the split file ({exc.__class__.__name__}: {exc})") from None
    ids = [line for line in lines if line]
    if not ids:
        raise DataError(f"{path}: the split file lists no image ids (one id, an XML file's stem, per line)")
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        report.notes.append(f"{path}: {len(ids) - len(unique)} repeated image ids read once")
    return unique


def _parse_xml(path: Path) -> ET.Element:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the annotation file ({exc.__class__.__name__}: {exc})") from None
    try:
        if DefusedXmlException is None and b"<!ENTITY" in data:
            raise ValueError("an entity declaration")
        return _fromstring(data)
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise DataError(f"{path}: not well-formed XML at line {line}, column {col + 1} ({exc})") from None
    except ValueError as exc:  # defusedxml's EntitiesForbidden, DTDForbidden, ExternalReferenceForbidden
        raise DataError(f"{path}: refused XML with {exc} (entity-expansion protection; VOC files need no DTD entities)") from None


def _number(text: str | None, what: str, where: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} is {text!r}, not a finite number")
    return value


def _flag(text: str | None, what: str, where: str) -> bool:
    t = (text or "").strip().lower()
    if t in ("", "0", "false", "no"):
        return False
    if t in ("1", "true", "yes"):
        return True
    raise DataError(f"{where}: <{what}> is {text!r}; expected 0 or 1")


def _declared_size(root: ET.Element, where: str) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None or not (size.findtext("width") or "").strip() or not (size.findtext("height") or "").strip():
        return None  # no size: unknown
    w, h = (_number(size.findtext(k), f"<size><{k}>", where) for k in ("width", "height"))
    if w < 0 or h < 0 or w != int(w) or h != int(h):
        raise DataError(f"{where}: <size> {w:g}x{h:g} is not a whole, non-negative image size")
    return None if w == 0 or h == 0 else (int(w), int(h))  # 0 = unknown (some tools write zeros)


def _objects(root: ET.Element, where: str) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """Boxes ``(n, 4)`` xyxy pixels (VOC minima shifted by -1), names, per-box flags."""
    boxes, labels = [], []
    flags: dict[str, list[bool]] = {k: [] for k in FLAGS}
    objects = root.findall("object")
    for i, obj in enumerate(objects, start=1):
        name = (obj.findtext("name") or "").strip()
        at = f"{where}: object {i} {name!r}"
        if not name:
            raise DataError(f"{where}: object {i} has no <name>")
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{at} has no <bndbox>")
        x1, y1, x2, y2 = (_number(bb.findtext(k), k, at) for k in ("xmin", "ymin", "xmax", "ymax"))
        for lo, hi, a, b in ((x1, x2, "xmin", "xmax"), (y1, y2, "ymin", "ymax")):
            if lo > hi:
                raise DataError(f"{at}: {a} {lo:g} > {b} {hi:g}; the corners are swapped or mistyped")
        boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
        labels.append(name)
        for k in FLAGS:
            flags[k].append(_flag(obj.findtext(k), k, at))
    keep = ("difficult", "truncated") + (("occluded",) if any(o.find("occluded") is not None for o in objects) else ())
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, {k: np.array(flags[k], dtype=bool) for k in keep}


def _image_path(root: ET.Element, xml: Path, img_dir: Path) -> Path:
    filename = (root.findtext("filename") or "").strip()
    candidates = [img_dir / filename, img_dir / Path(filename).name] if filename else []
    for stem in dict.fromkeys([xml.stem, Path(filename).stem if filename else xml.stem]):
        candidates += [img_dir / f"{stem}{s}" for s in IMAGE_SUFFIXES]
    path = (root.findtext("path") or "").strip()
    # The first that exists; none: candidates[0], which make_sample reports as not found.
    return next((c for c in candidates + ([Path(path)] if path else []) if c.is_file()), candidates[0])


def read_voc(
    root_or_annotations: str | Path,
    images: str | Path | None = None,
    split: str = "train",
    options: ReadOptions | None = None,
) -> DetectionDataset:
    """Read split ``split`` of a Pascal VOC dataset.

    Args:
        root_or_annotations: a VOC root (``Annotations/`` + ``JPEGImages/``, optional
            ``ImageSets/Main/<split>.txt``) or a plain pair root (``annotations/`` + ``images/``);
            with ``images`` given, the folder of XML files itself.
        images: the image folder, for an explicitly given pair.
        split: with ``ImageSets/Main/<split>.txt`` (or an alias: ``val``/``valid``/``validation``)
            only those ids are read; a root with ``ImageSets/Main`` but no such file is an error
            naming the splits it has; without ``ImageSets/Main`` every XML is read (one set, for
            the caller to split). Sample ids are ``"<split>/<xml stem>"``.
        options: bad-input policy (see :class:`ReadOptions`).
    """
    opts = options or ReadOptions()
    path = Path(root_or_annotations)
    if not path.is_dir():
        raise DataError(f"VOC dataset folder not found: {path}")
    if images is not None:
        ann_dir, img_dir = path, Path(images)
        root = path.parent if path.name == "Annotations" else None
        if not img_dir.is_dir():
            raise DataError(f"VOC image folder not found: {img_dir}")
    else:
        pair = _pair(path)
        if pair is None:
            inner = [p.name for p in sorted(path.iterdir()) if p.is_dir() and _pair(p)]
            raise DataError(
                f"{path}: not a VOC folder: expected Annotations/ + JPEGImages/ or annotations/ + images/"
                + (f" (found in: {', '.join(inner)}; pass one of them)" if inner else "; or pass images=<folder> with the folder of XML files")
            )
        (ann_dir, img_dir), root = pair, path
    report = ReadReport(source=f"{ann_dir} [{split}]")
    ids = _split_ids(root, split, report) if root is not None else None
    xmls = _xml_files(ann_dir) if ids is None else [ann_dir / f"{i}.xml" for i in ids]
    if not xmls:
        raise DataError(f"no XML annotation files found in {ann_dir}")
    samples = []
    for xml in xmls:
        where = str(xml)
        try:
            if not xml.is_file():
                raise DataError(f"{where}: annotation file not found (listed in the {split} split)")
            tree = _parse_xml(xml)
            if tree.tag != "annotation":
                raise DataError(f"{where}: the root element is <{tree.tag}>, not a VOC <annotation>")
            boxes, labels, flags = _objects(tree, where)
            samples.append(
                make_sample(
                    sample_id=f"{split}/{xml.stem}",
                    where=where,
                    image_path=_image_path(tree, xml, img_dir),
                    boxes=boxes,
                    labels=labels,
                    declared_wh=_declared_size(tree, where),
                    box_meta=flags,
                    opts=opts,
                    report=report,
                )
            )
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    classes = list(opts.classes) if opts.classes is not None else sorted({label for s in samples for label in s.labels})
    return DetectionDataset(samples, classes, report, name=str(root or ann_dir))
