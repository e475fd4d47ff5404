"""Samples -> TRL rows: the prompt builder and the family's codec, applied in one place.

:class:`TaskSettings` is everything needed to turn a Sample into a prompt and a target, and a model
answer back into boxes: the family, its codec settings, the prompt style, the task and the class
list. It is saved beside a trained model as ``vlmdet.json`` so that ``eval``, ``predict`` and
``doctor`` rebuild exactly the prompts and coordinate space the model was trained with.

A TRL row (prompt/completion, conversational)::

    {"images": [<PIL image>],
     "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}],
     "completion": [{"role": "assistant", "content": [{"type": "text", "text": TARGET}]}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmdet.codecs import Codec, Decoded, get_codec
from vlmdet.data.sample import Sample
from vlmdet.prompts import Task, build_prompt, check_class_names

SETTINGS_FILE = "vlmdet.json"


def canonical_order(boxes: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Objects in reading order (top to bottom, then left to right) — one fixed order per image,
    so the model is never penalised for listing the same objects in another order."""
    if len(boxes) == 0:
        return boxes, labels
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))
    return boxes[order], [labels[i] for i in order]


@dataclass
class TaskSettings:
    """How prompts and targets are made for one model (saved as ``vlmdet.json``).

    Attributes:
        family: model family name (``vlmdet.families``).
        codec_settings: extra codec settings (Qwen2.5-VL: factor, min_pixels, max_pixels).
        task: ``detect`` (closed set: all ``classes`` in every prompt), ``detect_named`` (the
            prompt names the sample's classes) or ``ground`` (the sample's phrase).
        classes: the closed class set, in prompt order.
        max_new_tokens: generation budget for an answer.
        target_space: ``"model"`` (always, in real use). ``"original"`` writes targets in the original
            image's pixels — the classic coordinate mistake — for ablations and ``doctor`` tests only;
            decoding still assumes the model's space, as any inference code would.
    """

    family: str
    codec_settings: dict[str, Any] = field(default_factory=dict)
    task: str = "detect"
    classes: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    target_space: str = "model"

    @property
    def family_spec(self):
        from vlmdet.families import get_family

        return get_family(self.family)

    @property
    def codec(self) -> Codec:
        if not hasattr(self, "_codec"):
            self._codec = get_codec(self.family_spec.codec, **self.codec_settings)
        return self._codec

    @classmethod
    def for_model(cls, family: str, processor: Any, **kwargs: Any) -> "TaskSettings":
        """Settings for a freshly loaded model: codec settings are read off its processor."""
        from vlmdet.families import get_family

        return cls(family=family, codec_settings=get_family(family).codec_settings(processor), **kwargs)

    @property
    def target_codec(self) -> Codec:
        """The codec targets are written with (the model's own unless ``target_space="original"``)."""
        if self.target_space == "model":
            return self.codec
        if self.target_space != "original":
            raise ValueError(f"target_space must be 'model' or 'original', got {self.target_space!r}")
        from vlmdet.codecs.json_boxes import JsonBoxCodec

        return JsonBoxCodec(space="original_pixels", fenced=getattr(self.codec, "fenced", True), name="original_pixels")

    def check(self) -> None:
        """Refuse settings a model could not be prompted with or answer in: class names that break the
        family's prompt list or its answer format (``ValueError`` naming the class and the fix)."""
        if self.task == "ground":
            return
        if not self.classes:
            raise ValueError(f"task {self.task} needs a class list: set `classes` or use data that names its classes")
        check_class_names(self.classes, self.family_spec.prompt_style)
        try:
            self.target_codec.check_labels(np.zeros((len(self.classes), 4)), list(self.classes))
        except ValueError as exc:
            raise ValueError(f"class list {list(self.classes)}: {exc}") from None

    def task_for(self, sample: Sample) -> Task:
        if self.task == "ground" or sample.phrase is not None:
            if not sample.phrase:
                raise ValueError(f"{sample.source}: a grounding task needs a phrase on every sample")
            return Task("ground", phrase=sample.phrase)
        if self.task == "detect_named":
            names = tuple(dict.fromkeys(sample.targets[1])) or tuple(self.classes)
            return Task("detect_named", names)
        return Task("detect", tuple(self.classes))

    def prompt(self, sample: Sample) -> str:
        return build_prompt(self.task_for(sample), self.family_spec.prompt_style)

    def target(self, sample: Sample) -> str:
        """The exact text the model is trained to write for ``sample`` (crowd regions excluded)."""
        boxes, labels = canonical_order(*sample.targets)
        try:
            return self.target_codec.encode(boxes, labels, sample.image_wh)
        except ValueError as exc:
            raise ValueError(f"{sample.source}: cannot encode the target ({exc})") from None

    def decode(self, text: str, sample_or_wh: Sample | tuple[int, int]) -> Decoded:
        """Boxes and labels of a model answer; for a detection task the labels are matched to the
        class list by the label policy (:mod:`vlmdet.codecs.labels`: case, plural)."""
        wh = sample_or_wh.image_wh if isinstance(sample_or_wh, Sample) else sample_or_wh
        return self.codec.decode(text, wh, classes=None if self.task == "ground" else self.classes)

    def prompt_messages(self, sample: Sample) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt(sample)}]}]

    def row(self, sample: Sample, image: Any | None = None) -> dict[str, Any]:
        """The TRL prompt/completion row of ``sample`` (image loaded unless given)."""
        return {
            "images": [image if image is not None else sample.load_image()],
            "prompt": self.prompt_messages(sample),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": self.target(sample)}]}],
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / SETTINGS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "TaskSettings | None":
        path = Path(model_dir) / SETTINGS_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and not k.startswith("_")})


class RowSource:
    """Samples as TRL prompt/completion rows, images decoded on access (through ``cache`` if given).

    Every training method takes its rows from here (SFT trains on the completion; GRPO generates
    its own and scores them against the sample), so both see the same prompts and images.
    """

    index_column = "index"  # the dataset's one stored column: the sample's index

    def __init__(self, samples: list[Sample], settings: TaskSettings, cache: Any | None = None) -> None:
        self.samples, self.settings, self.cache = samples, settings, cache

    def image(self, sample: Sample):
        if self.cache is None:
            return sample.load_image()
        return self.cache.get(sample.id, sample.load_image)

    def row(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {**self.settings.row(s, self.image(s)), "id": s.source or s.id}

    def dataset(self):
        """A ``datasets.Dataset`` of indices whose transform builds rows on the fly.

        TRL wants a ``datasets.Dataset``; materialising every image into Arrow would copy the whole
        image set, so the rows (and images) are produced lazily by ``with_transform``.
        """
        import datasets

        column = self.index_column

        def transform(batch: dict[str, list]) -> dict[str, list]:
            rows = [self.row(i) for i in batch[column]]
            return {k: [r[k] for r in rows] for k in rows[0]}

        return datasets.Dataset.from_dict({column: list(range(len(self.samples)))}).with_transform(transform)


class PromptSource(RowSource):
    """Training samples as TRL's conversational GRPO rows: the prompt with its image, and the
    ``sample_index`` the rewards look the ground truth up by. Images decode on access (cached)."""

    index_column = "sample_index"

    def row(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        prompt = [{"role": "user", "content": [{"type": "image", "image": self.image(s)}, {"type": "text", "text": self.settings.prompt(s)}]}]
        return {"prompt": prompt, "sample_index": i}
