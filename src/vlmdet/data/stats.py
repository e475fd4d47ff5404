"""What a dataset holds, before a model sees it: ``vlmdet data stats`` without a model.

Figures per split: images, negatives, boxes per class and per image (histogram), image sizes, tiny,
clipped, dropped and duplicate boxes, class imbalance — and the warnings a user should act on
before training. Boxes are xyxy pixels of the original image, as everywhere inside vlmdet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmdet.data.sample import DetectionDataset

PER_IMAGE_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 9), (10, 19), (20, 10**9))
TINY_SIDE = 8  # pixels of the original image: a box this thin is hard to see after any resize
DUPLICATE_IOU = 0.95  # two boxes of one class that overlap this much are one object annotated twice
FEW_BOXES = 10


def _bin_name(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else (f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def duplicate_boxes(boxes: np.ndarray, labels: list[str], iou: float = DUPLICATE_IOU) -> int:
    """Boxes that repeat an earlier box of the same class in the same image (IoU >= ``iou``)."""
    n = 0
    for label in set(labels):
        b = boxes[[i for i, lab in enumerate(labels) if lab == label]]
        if len(b) > 1:
            m = np.triu(_iou(b, b) >= iou, k=1)
            n += int(m.any(axis=0).sum())
    return n


@dataclass
class SplitStats:
    """The figures of one split (see the module docstring)."""

    name: str
    images: int = 0
    negatives: int = 0
    boxes: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    images_per_class: dict[str, int] = field(default_factory=dict)
    per_image: dict[str, int] = field(default_factory=dict)
    widths: tuple[int, int, int] = (0, 0, 0)  # min, median, max
    heights: tuple[int, int, int] = (0, 0, 0)
    distinct_sizes: int = 0
    tiny: int = 0
    duplicates: int = 0
    clipped: int = 0
    dropped: int = 0
    crowd: int = 0
    ignored: int = 0  # VOC difficult objects: trained, not scored
    skipped: int = 0
    made_by_vlmdet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_stats(ds: DetectionDataset, name: str) -> SplitStats:
    st = SplitStats(name, made_by_vlmdet=ds.split_info is not None)
    per_class: Counter[str] = Counter()
    images_per_class: Counter[str] = Counter()
    per_image: Counter[str] = Counter()
    ws, hs = [], []
    for s in ds:
        boxes, labels = s.targets
        st.images += 1
        st.negatives += not labels
        st.boxes += len(labels)
        per_class.update(labels)
        images_per_class.update(set(labels))
        per_image[next(_bin_name(lo, hi) for lo, hi in PER_IMAGE_BINS if lo <= len(labels) <= hi)] += 1
        ws.append(s.image_wh[0])
        hs.append(s.image_wh[1])
        if len(boxes):
            st.tiny += int((np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < TINY_SIDE).sum())
            st.duplicates += duplicate_boxes(boxes, labels)
        st.crowd += int(s.iscrowd.sum())
        st.ignored += int(s.ignored.sum() - s.iscrowd.sum())
    st.per_class = {c: per_class.get(c, 0) for c in ds.classes} | {c: n for c, n in per_class.items() if c not in ds.classes}
    st.images_per_class = {c: images_per_class.get(c, 0) for c in st.per_class}
    st.per_image = {_bin_name(lo, hi): per_image.get(_bin_name(lo, hi), 0) for lo, hi in PER_IMAGE_BINS}
    if ws:
        st.widths = (int(min(ws)), int(np.median(ws)), int(max(ws)))
        st.heights = (int(min(hs)), int(np.median(hs)), int(max(hs)))
        st.distinct_sizes = len(set(zip(ws, hs)))
    if ds.split_info is None or name == "train":  # a made split shares its source's read report: count it once
        st.clipped, st.dropped, st.skipped = ds.report.clipped, ds.report.dropped_empty, len(ds.report.skipped)
    return st


def warnings_for(stats: list[SplitStats]) -> list[str]:
    """What a user should act on before training, from the split figures."""
    out: list[str] = []
    train = next((s for s in stats if s.name == "train"), stats[0] if stats else None)
    if train is None:
        return out
    for c, n in train.per_class.items():
        if n == 0:
            out.append(f"class {c!r} has no training box: the model cannot learn it (remove it from the classes, or annotate it)")
        elif n < FEW_BOXES:
            out.append(f"class {c!r} has only {n} training boxes: expect a poor AP on it (aim for tens per class)")
    counts = [n for n in train.per_class.values() if n]
    if len(counts) > 1 and max(counts) / min(counts) >= 10:
        top = max(train.per_class, key=train.per_class.get)
        out.append(f"class imbalance {max(counts) / min(counts):.0f}:1 ({top!r} dominates): the rare classes will be predicted rarely")
    if train.images and train.negatives / train.images > 0.5:
        out.append(f"{train.negatives} of {train.images} training images have no box: the model learns to answer 'nothing' often")
    for s in stats:
        if s.duplicates:
            out.append(f"{s.name}: {s.duplicates} boxes repeat another box of the same class (IoU >= {DUPLICATE_IOU}): annotated twice?")
        if s.boxes and s.tiny / s.boxes > 0.1:
            out.append(f"{s.name}: {s.tiny} of {s.boxes} boxes are under {TINY_SIDE} px on a side: check the images are not too small for them")
        if s.dropped:
            out.append(f"{s.name}: {s.dropped} zero-size or outside boxes were dropped while reading")
        if s.skipped:
            out.append(f"{s.name}: {s.skipped} images were skipped as unreadable (see the read report)")
    evals = [s for s in stats if s.name != "train"]
    for s in evals:
        missing = [c for c, n in s.per_class.items() if n == 0 and train.per_class.get(c)]
        if missing and s.images:
            out.append(f"{s.name}: no box of {', '.join(map(repr, missing[:5]))}: their AP on this split is undefined")
    if not evals:
        out.append("no evaluation split: vlmdet train holds out val_fraction of the images (stratified, seeded)")
    return out


def format_stats(stats: list[SplitStats]) -> str:
    """The figures as plain text tables (what ``vlmdet data stats`` prints)."""
    lines = []
    header = "| | " + " | ".join(s.name + (" (held out by vlmdet)" if s.made_by_vlmdet and s.name != "train" else "") for s in stats) + " |"
    rule = "| --- |" + " ---: |" * len(stats)
    rows = [
        ("images", [s.images for s in stats]), ("negative images (no box)", [s.negatives for s in stats]), ("boxes", [s.boxes for s in stats]),
        ("image width min/median/max", ["/".join(map(str, s.widths)) for s in stats]),
        ("image height min/median/max", ["/".join(map(str, s.heights)) for s in stats]),
        ("distinct image sizes", [s.distinct_sizes for s in stats]),
        (f"tiny boxes (< {TINY_SIDE} px)", [s.tiny for s in stats]), ("duplicate boxes", [s.duplicates for s in stats]),
        ("clipped to the image", [s.clipped for s in stats]), ("dropped (zero size / outside)", [s.dropped for s in stats]),
        ("crowd regions", [s.crowd for s in stats]), ("difficult (not scored)", [s.ignored for s in stats]),
        ("images skipped", [s.skipped for s in stats]),
    ]
    lines += [header, rule] + [f"| {name} | " + " | ".join(map(str, vals)) + " |" for name, vals in rows]
    classes = list(dict.fromkeys(c for s in stats for c in s.per_class))
    lines += ["", "boxes per class (images with it)", "", header, rule]
    lines += [f"| {c} | " + " | ".join(f"{s.per_class.get(c, 0)} ({s.images_per_class.get(c, 0)})" for s in stats) + " |" for c in classes]
    lines += ["", "images by boxes per image", "", header, rule]
    lines += [f"| {b} | " + " | ".join(str(s.per_image.get(b, 0)) for s in stats) + " |" for b in stats[0].per_image] if stats else []
    return "\n".join(lines)
