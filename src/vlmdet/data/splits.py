"""Splits that never leak: a held-out split for one-set datasets, and no image on both sides.

A dataset that is one set of images (a single COCO file, a VOC folder without ``ImageSets``, a
Label Studio export, a CSV) — or one with a training split and no evaluation split — is split by
:func:`holdout_split`: deterministic for a seed, and stratified so that each class appears on both
sides where it can. Whatever the source, :func:`check_no_overlap` refuses a run whose evaluation
images are also training images: the same file, a byte-identical copy under another name, or the
same decoded pixels (a re-saved copy) — the "after" column would measure memorisation.

Why not ``sklearn.model_selection.train_test_split(stratify=...)``: it stratifies on one label per
item, and a detection image has a *set* of classes (or none); vlmdet is not otherwise a scikit-learn
user. The greedy pass below gives every class its share of held-out images, rarest class first.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmdet.data.readers import ReadOptions, dataset_splits, open_dataset
from vlmdet.data.readers.common import split_names
from vlmdet.data.sample import DataError, DetectionDataset, Sample


@dataclass(frozen=True)
class Holdout:
    """How a one-set dataset is split: fractions of all images, and the seed of the shuffle."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must lie in [0, 1) and sum below 1, got {self.val_fraction} and {self.test_fraction}")


def _carve(samples: list[Sample], n_out: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Indices (kept, held out), about ``n_out`` held out, by iterative stratification (Sechidis et
    al., 2011, the method of scikit-multilearn's ``IterativeStratification``) for two sides: labels
    from the rarest up, each of its images goes to the side that still wants most of that label (ties:
    the side that wants most images, then the shuffle). Each side starts wanting its share of every
    label, and the training side's share is the larger, so every class is trained on."""
    n = len(samples)
    if n_out <= 0 or n == 0:
        return list(range(n)), []
    frac = n_out / n
    labelsets = [set(s.labels) for s in samples]
    totals = Counter(c for ls in labelsets for c in ls)
    want = {c: [(1 - frac) * t, frac * t] for c, t in totals.items()}  # [kept, held out]
    size_want = [n - n_out, n_out]
    side = [-1] * n
    order = rng.permutation(n).tolist()

    def place(i: int, k: int) -> None:
        side[i] = k
        size_want[k] -= 1
        for c in labelsets[i]:
            want[c][k] -= 1

    for label in sorted(totals, key=lambda c: (totals[c], c)):
        for i in order:
            if side[i] == -1 and label in labelsets[i]:
                w = want[label]
                trained = w[0] < (1 - frac) * totals[label]  # the label has a training image already
                k = 0 if not trained or w[0] > w[1] else 1 if w[1] > w[0] else (0 if size_want[0] >= size_want[1] else 1)
                place(i, k)
    for i in order:  # images without a box: to the side that wants more images
        if side[i] == -1:
            place(i, 0 if size_want[0] >= size_want[1] else 1)
    # Per-label rounding leaves the held-out side an image or two off its size: move the images whose
    # classes are furthest over (or under) their share, never a class's last training image.
    held_count = Counter(c for i in range(n) if side[i] == 1 for c in labelsets[i])
    kept_count = Counter(c for i in range(n) if side[i] == 0 for c in labelsets[i])

    def excess(i: int) -> float:
        return max((held_count[c] - frac * totals[c] for c in labelsets[i]), default=0.0)

    n_held = side.count(1)
    while n_held > n_out:
        i = max((j for j in order if side[j] == 1), key=excess)
        side[i], n_held = 0, n_held - 1
        held_count.subtract(labelsets[i])
        kept_count.update(labelsets[i])
    while n_held < n_out:
        movable = [j for j in order if side[j] == 0 and all(kept_count[c] > 1 for c in labelsets[j])]
        if not movable:
            if n_held:
                break
            movable = [j for j in order if side[j] == 0]  # nothing held out yet: an empty split scores nothing
        i = min(movable, key=excess)
        side[i], n_held = 1, n_held + 1
        kept_count.subtract(labelsets[i])
        held_count.update(labelsets[i])
    _refine(side, labelsets, totals, frac, rng)
    return [i for i in range(n) if side[i] == 0], [i for i in range(n) if side[i] == 1]


def _refine(side: list[int], labelsets: list[set[str]], totals: Counter[str], frac: float, rng: np.random.Generator,
            rounds: int = 200, sample: int = 64) -> None:
    """Swap held-out and kept images while that brings every class's held-out count closer to its share
    (least squares; images without a box count as one more class). Labels that co-occur pull the
    greedy pass off its shares; a few swaps put them back. Bounded: ``rounds`` swaps, each the best
    among ``sample`` images of either side; no class loses its last training image."""
    names = sorted(totals)
    x = np.zeros((len(side), len(names) + 1))
    for i, ls in enumerate(labelsets):
        for c in ls:
            x[i, names.index(c)] = 1
        x[i, -1] = not ls
    target = frac * x.sum(axis=0)
    sides = np.asarray(side)
    for _ in range(rounds):
        out, keep = np.flatnonzero(sides == 1), np.flatnonzero(sides == 0)
        if not len(out) or not len(keep):
            break
        out = rng.choice(out, size=min(sample, len(out)), replace=False)
        keep = rng.choice(keep, size=min(sample, len(keep)), replace=False)
        held, kept = x[sides == 1].sum(axis=0), x[sides == 0].sum(axis=0)
        change = x[keep][None, :, :] - x[out][:, None, :]  # (out, keep, labels): held-out counts after swapping
        gain = ((held - target) ** 2).sum() - ((held + change - target) ** 2).sum(axis=2)
        # a class the kept image alone trains must not leave the training side
        orphans = ((change[..., :-1] > 0) & (kept[:-1] <= 1)).any(axis=2)
        gain[orphans] = 0.0
        a, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[a, b] <= 1e-9:
            break
        sides[out[a]], sides[keep[b]] = 0, 1
    side[:] = sides.tolist()


def holdout_split(ds: DetectionDataset, holdout: Holdout, source: str = "") -> dict[str, DetectionDataset]:
    """``{"train": ..., "val": ...[, "test": ...]}`` from one set (see the module docstring)."""
    n = len(ds)
    rng = np.random.default_rng(holdout.seed)
    n_test = int(round(holdout.test_fraction * n))
    n_val = int(round(holdout.val_fraction * n))
    if holdout.val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if n - n_val - n_test < 1:
        raise DataError(f"{source or ds.name}: {n} images cannot be split into train / val / test ({holdout}); it needs more images")
    rest, test = _carve(ds.samples, n_test, rng) if n_test else (list(range(n)), [])
    rest_ds = ds.subset(rest)
    train_i, val_i = _carve(rest_ds.samples, n_val, rng) if n_val else (list(range(len(rest))), [])
    parts = {"train": rest_ds.subset(train_i), "val": rest_ds.subset(val_i)}
    if n_test:
        parts["test"] = ds.subset(test)
    info = {"made_by": "vlmdet", "from": source or ds.name, **asdict(holdout), **{k: len(v) for k, v in parts.items()}}
    missing = sorted({c for s in parts["train"] for c in s.labels} - {c for s in parts["val"] for c in s.labels}) if n_val else []
    if missing:
        info["classes_only_in_train"] = missing
    untrained = sorted({c for s in parts["val"] for c in s.labels} - {c for s in parts["train"] for c in s.labels})
    if untrained:
        info["classes_only_held_out"] = untrained
    for v in parts.values():
        v.split_info = info
    return parts


def describe(info: dict[str, Any]) -> str:
    sizes = " / ".join(f"{info[k]} {k}" for k in ("train", "val", "test") if k in info)
    text = (f"{info['from']} has no evaluation split: vlmdet held out {info['val_fraction']:.0%} for val"
            + (f" and {info['test_fraction']:.0%} for test" if info.get("test_fraction") else "")
            + f" (seed {info['seed']}, stratified by class): {sizes} images. Set val_fraction / seed to change it")
    if info.get("classes_only_in_train"):
        text += f"; classes with too few images to appear in val: {', '.join(info['classes_only_in_train'])}"
    if info.get("classes_only_held_out"):
        text += f"; WARNING: classes whose every image was needed for val, so never trained: {', '.join(info['classes_only_held_out'])}"
    return text


def _is_hub_id(spec: str) -> bool:
    return spec.startswith("hf:") and not Path(spec[3:]).exists()


def read_train_eval(
    spec: str,
    train_split: str,
    eval_split: str | None,
    options: ReadOptions,
    holdout: Holdout = Holdout(),
    closed_eval: bool = True,
) -> tuple[DetectionDataset, DetectionDataset | None]:
    """The training and evaluation splits of ``spec``: its own where it has them, else held out by
    :func:`holdout_split` (the training split is then what is left). ``closed_eval``: the evaluation
    split may hold only the training split's classes (an unknown one is an error naming it)."""
    have = None if _is_hub_id(spec) else dataset_splits(spec)
    native = _is_hub_id(spec) or (have is not None and (eval_split is None or any(n in have for n in split_names(eval_split))))
    if native:
        train = open_dataset(spec, train_split, options)
        if not eval_split:
            return train, None
        classes = options.classes or (train.classes if closed_eval else None)
        return train, open_dataset(spec, eval_split, dataclasses.replace(options, classes=classes))
    parts = _made_splits(spec, have, train_split, options, holdout)
    if eval_split and eval_split not in parts:
        raise DataError(f"{spec}: no {eval_split!r} split, and vlmdet makes only train / val / test (set test_fraction for a test split)")
    return parts["train"], parts[eval_split] if eval_split else None


def read_split(spec: str, split: str, options: ReadOptions | None = None, holdout: Holdout = Holdout()) -> DetectionDataset:
    """One split of ``spec``: its own, or the one :func:`holdout_split` makes of a one-set dataset."""
    options = options or ReadOptions()
    have = None if _is_hub_id(spec) else dataset_splits(spec)
    if _is_hub_id(spec) or (have is not None and any(n in have for n in split_names(split))):
        return open_dataset(spec, split, options)
    parts = _made_splits(spec, have, "train", options, holdout)
    if split not in parts:
        raise DataError(f"{spec}: no {split!r} split (vlmdet made: {', '.join(parts)})")
    return parts[split]


def _made_splits(spec: str, have: list[str] | None, train_split: str, options: ReadOptions, holdout: Holdout = Holdout()) -> dict[str, DetectionDataset]:
    if have is not None and train_split not in have:
        raise DataError(f"{spec}: no {train_split!r} split (it has: {', '.join(have)})")
    whole = open_dataset(spec, train_split, options)
    source = f"{spec} [{train_split}]" if have else str(spec)
    return holdout_split(whole, holdout, source)


# ----------------------------------------------------------------------------- overlap
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pixel_digest(s: Sample) -> str:
    img = s.load_image()
    return hashlib.sha256(f"{img.size}".encode() + img.tobytes()).hexdigest()


def find_overlap(train: DetectionDataset, other: DetectionDataset) -> list[tuple[Sample, Sample, str]]:
    """``(other sample, train sample, how)`` for every image of ``other`` that is also a training
    image: ``"same file"``, ``"same bytes"`` or ``"same pixels"``. Pixels are compared only between
    images of the same size, so a dataset without look-alikes costs one read of each file."""
    found: list[tuple[Sample, Sample, str]] = []
    by_path = {s.image_path.resolve(): s for s in train if s.image_path is not None}
    by_size: dict[tuple[int, int], list[Sample]] = {}
    for s in train:
        by_size.setdefault(tuple(s.image_wh), []).append(s)
    candidates = []
    for s in other:
        if s.image_path is not None and s.image_path.resolve() in by_path:
            found.append((s, by_path[s.image_path.resolve()], "same file"))
        elif tuple(s.image_wh) in by_size:
            candidates.append(s)
    if not candidates:
        return found
    sizes = {tuple(s.image_wh) for s in candidates}
    pool = [t for size in sizes for t in by_size[size]]
    by_bytes = {_file_digest(t.image_path): t for t in pool if t.image_path is not None}
    left = []
    for s in candidates:
        t = by_bytes.get(_file_digest(s.image_path)) if s.image_path is not None else None
        (found.append((s, t, "same bytes")) if t is not None else left.append(s))
    if left:
        by_pixels = {_pixel_digest(t): t for t in pool}
        for s in left:
            t = by_pixels.get(_pixel_digest(s))
            if t is not None:
                found.append((s, t, "same pixels"))
    return found


def check_no_overlap(train: DetectionDataset, other: DetectionDataset | None, split: str = "val", allow: bool = False) -> list[tuple[Sample, Sample, str]]:
    """Refuse (``DataError``) evaluation images that are training images, naming them; with ``allow``,
    return them so the caller can say so."""
    if other is None:
        return []
    found = find_overlap(train, other)
    if found and not allow:
        shown = "; ".join(f"{s.source or s.id} = {t.source or t.id} ({how})" for s, t, how in found[:3])
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        raise DataError(
            f"{len(found)} of the {len(other)} {split} images are also training images: {shown}{more}. Scores on them measure "
            f"memorisation, not detection. Remove them from one split, or set allow_overlap=true (vlmdet eval: --allow-overlap) to score on them on purpose"
        )
    return found
