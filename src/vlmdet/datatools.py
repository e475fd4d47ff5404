"""``vlmdet data stats | convert | show``: look at a dataset as vlmdet will read it, before training.

* :func:`data_stats` — the figures of :mod:`vlmdet.data.stats` per split and, given a model (or a
  family, whose offline tiny model lends its processor), what the model will be fed: target tokens
  per answer, image tokens at the processor's ``max_pixels``, the longest sequence and the padded
  size of a batch — measured by collating real rows with the training collator.
* :func:`data_convert` — :func:`vlmdet.data.convert.convert` on the splits.
* :func:`data_show` — a contact sheet of images with their boxes drawn (supervision), so a user
  sees what the model will be taught.

Splits are those the dataset has; a dataset without an evaluation split is shown split the way
``vlmdet train`` would split it (:mod:`vlmdet.data.splits`, ``val_fraction`` and ``seed``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmdet.data.readers import ReadOptions, dataset_splits
from vlmdet.data.sample import DetectionDataset
from vlmdet.data.splits import Holdout, describe, read_train_eval
from vlmdet.data.stats import SplitStats, format_stats, split_stats, warnings_for

IMAGE_TOKENS_WARN = 1024  # image tokens per image beyond which a CPU or small-GPU run gets slow
SEQUENCE_WARN = 4096


def read_all_splits(spec: str, holdout: Holdout = Holdout(), on_bad_data: str = "raise") -> dict[str, DetectionDataset]:
    """Every split of ``spec`` by name (``valid`` / ``validation`` called ``val``), or the train / val
    (/ test) that vlmdet makes of a dataset without an evaluation split."""
    opts = ReadOptions(on_error=on_bad_data)
    have = dataset_splits(spec)
    if have and any(n in have for n in ("val", "valid", "validation")):
        from vlmdet.data.readers import open_dataset

        names = {("val" if n in ("valid", "validation") else n): n for n in have}
        return {name: open_dataset(spec, native, opts) for name, native in names.items()}
    train, val = read_train_eval(spec, "train", "val" if holdout.val_fraction > 0 else None, opts, holdout)
    out = {"train": train}
    if val is not None:
        out["val"] = val
    if holdout.test_fraction > 0 and not (have and "test" in have):
        out["test"] = read_train_eval(spec, "train", "test", opts, holdout)[1]
    if have:  # the dataset's own other splits (a test split beside a train split without val)
        from vlmdet.data.readers import open_dataset

        out.update({n: open_dataset(spec, n, opts) for n in have if n not in out})
    return out


@dataclass
class ModelFit:
    """What one model is fed, measured on the rows of ``measured`` training samples."""

    model: str
    family: str
    measured: int
    target_tokens: tuple[int, int, int]  # min, median, max
    image_tokens: tuple[int, int, int]
    longest_sequence: int
    longest_sample: str
    batch_size: int
    refused: list[str] = field(default_factory=list)
    note: str = ""

    def lines(self) -> list[str]:
        t, i = self.target_tokens, self.image_tokens
        out = [
            f"model {self.model} ({self.family}), measured on {self.measured} training rows (the longest answers and largest images){self.note}:",
            f"  target tokens per answer: min {t[0]}, median {t[1]}, max {t[2]}",
            f"  image tokens per image: min {i[0]}, median {i[1]}, max {i[2]}",
            f"  longest sequence: {self.longest_sequence} tokens ({self.longest_sample}); a batch of {self.batch_size} pads to at most "
            f"{self.batch_size * self.longest_sequence} tokens",
        ]
        if self.refused:
            out.append(f"  {len(self.refused)} images the processor refuses, e.g. {self.refused[0]}")
        return out

    def warnings(self) -> list[str]:
        out = []
        if self.image_tokens[2] > IMAGE_TOKENS_WARN:
            out.append(f"up to {self.image_tokens[2]} image tokens per image: lower max_pixels to train faster (boxes are rescaled with the image)")
        if self.longest_sequence > SEQUENCE_WARN:
            out.append(f"the longest sequence is {self.longest_sequence} tokens: lower max_pixels or per_device_train_batch_size")
        if self.refused:
            out.append(f"{len(self.refused)} images cannot be fed to this model: fix them, or train with on_bad_data=skip")
        return out


def model_fit(train: DetectionDataset, model: str | None = None, family: str | None = None, max_pixels: int | None = None,
              batch_size: int = 16, sample_size: int = 24) -> ModelFit:
    """Collate the rows of the ``sample_size`` longest answers and ``sample_size`` largest images with
    the training collator and read their lengths (see the module docstring)."""
    import torch

    from vlmdet.models.loading import load_processor
    from vlmdet.models.processing import image_feature_token_id, image_problem
    from vlmdet.rows import TaskSettings
    from vlmdet.train.collator import DetectionCollator

    note = ""
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            if family is None:
                raise ValueError("give --model DIR_OR_ID or --family NAME to measure tokens")
            from vlmdet.models.tiny import build_tiny_model

            processor, fam = load_processor(str(build_tiny_model(family, Path(tmp) / f"tiny-{family}")), family, max_pixels=max_pixels)
            model = f"tiny:{family}"
            note = (f"; with vlmdet's offline tiny {family} processor: its image settings and tokenizer, which may differ from a "
                    "released checkpoint's — pass --model for exact figures")
        else:
            processor, fam = load_processor(model, family, max_pixels=max_pixels)
    settings = TaskSettings.for_model(fam.name, processor, task="detect", classes=list(train.classes))
    collate = DetectionCollator(processor, layout=fam.answer_layout, dtype=torch.float32)
    refused = [f"{s.source or s.id}: {p}" for s in train for p in [image_problem(processor, s.image_wh)] if p]
    ok = [s for s in train if image_problem(processor, s.image_wh) is None]
    by_answer = sorted(ok, key=lambda s: len(settings.target(s)), reverse=True)[:sample_size]
    by_area = sorted(ok, key=lambda s: s.image_wh[0] * s.image_wh[1], reverse=True)[:sample_size]
    chosen = list({id(s): s for s in by_answer + by_area}.values())
    image_id = image_feature_token_id(processor)
    targets, images, lengths = [], [], []
    for s in chosen:
        batch = collate([settings.row(s) | {"id": s.source or s.id}])
        lengths.append(int(batch["attention_mask"].sum()))
        targets.append(int((batch["labels"] != -100).sum()))
        images.append(int((batch["input_ids"] == image_id).sum()) if image_id is not None else 0)
    if not chosen:
        raise ValueError(f"{train.name}: no training image this model can take")
    k = int(np.argmax(lengths))

    def spread(v: list[int]) -> tuple[int, int, int]:
        return int(min(v)), int(np.median(v)), int(max(v))

    return ModelFit(model, fam.name, len(chosen), spread(targets), spread(images), lengths[k], chosen[k].source or chosen[k].id,
                    batch_size, refused, note)


@dataclass
class DataStats:
    """``vlmdet data stats``: per-split figures, the model fit if asked, and the warnings."""

    spec: str
    splits: list[SplitStats]
    split_note: str = ""
    fit: ModelFit | None = None
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"dataset {self.spec}"] + ([self.split_note] if self.split_note else []) + ["", format_stats(self.splits)]
        if self.fit is not None:
            lines += [""] + self.fit.lines()
        lines += ["", "warnings:" if self.warnings else "warnings: none"] + [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "split_note": self.split_note, "splits": [s.to_dict() for s in self.splits],
                "model": None if self.fit is None else self.fit.__dict__, "warnings": self.warnings}


def data_stats(spec: str, model: str | None = None, family: str | None = None, max_pixels: int | None = None, batch_size: int = 16,
               holdout: Holdout = Holdout(), on_bad_data: str = "raise") -> DataStats:
    splits = read_all_splits(spec, holdout, on_bad_data)
    stats = [split_stats(ds, name) for name, ds in splits.items()]
    info = splits["train"].split_info
    fit = model_fit(splits["train"], model, family, max_pixels, batch_size) if (model or family) else None
    warns = [w for w in warnings_for(stats) if not (info and w.startswith("no evaluation split"))]
    return DataStats(spec, stats, describe(info) if info else "", fit, warns + (fit.warnings() if fit else []))


def data_convert(spec: str, to: str, out: str | Path, holdout: Holdout = Holdout(), on_bad_data: str = "raise") -> dict[str, dict[str, int]]:
    from vlmdet.data.convert import convert

    return convert(read_all_splits(spec, holdout, on_bad_data), to, out)


def data_show(spec: str, out: str | Path, split: str = "train", n: int = 16, columns: int = 4, tile: int = 256, seed: int = 0,
              holdout: Holdout = Holdout(), on_bad_data: str = "raise") -> Path:
    """A contact sheet of ``n`` images of ``split`` (chosen with ``seed``) with their boxes and labels;
    crowd regions and difficult objects in grey."""
    from vlmdet.report.draw import GT_COLOUR, draw_boxes

    splits = read_all_splits(spec, holdout, on_bad_data)
    if split not in splits:
        raise ValueError(f"{spec}: no split {split!r} (has: {', '.join(splits)})")
    ds = splits[split]
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(ds), size=min(n, len(ds)), replace=False).tolist()) if len(ds) else []
    rows = max(1, -(-len(picks) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(picks):
        s = ds[i]
        img = s.load_image()
        scale = tile / max(img.size)
        small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        ignored = s.ignored
        small = draw_boxes(small, s.boxes[~ignored] * scale, [lab for lab, g in zip(s.labels, ignored) if not g], GT_COLOUR)
        small = draw_boxes(small, s.boxes[ignored] * scale, [f"{lab} (not scored)" for lab, g in zip(s.labels, ignored) if g], (140, 140, 140))
        x, y = (k % columns) * tile, (k // columns) * (tile + 14)
        sheet.paste(small, (x, y + 14))
        draw.text((x + 2, y + 1), f"{(Path(s.image_path).name if s.image_path else s.id)[:36]} ({len(s.labels)})", fill=(0, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
