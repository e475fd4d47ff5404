"""The Python API: a fine-tuned (or base) model as a detector that speaks supervision.

    from vlmdet import Detector
    import supervision as sv

    detector = Detector.from_pretrained("runs/demo")              # a run folder, an export, a hub id
    detections = detector.predict("street.jpg")                    # one image -> one sv.Detections
    batch = detector.predict(["a.jpg", "b.jpg"], batch_size=8)     # a list -> a list
    found = detector.predict(image, phrase="the red car")          # grounding

    annotated = sv.BoxAnnotator().annotate(image.copy(), detections)

Each :class:`supervision.Detections` holds ``xyxy`` in the original image's pixels (EXIF
orientation applied, as a viewer shows it), ``class_id`` (the index in the class list; -1 for a
label that is not a class — kept, as the metrics keep it), ``confidence`` from the model's token
probabilities (greedy decoding; ``None`` for sampling or beams), ``data["class_name"]`` and, in
``metadata``, the raw ``answer``, whether it ``parse_failed`` and the ``image_wh``.

Images are paths, PIL images or ``numpy`` ``HxWx3`` arrays in **RGB** order (PIL's; a frame from
``cv2`` is BGR: pass ``frame[..., ::-1]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlmdet.data.images import open_rgb, to_rgb
from vlmdet.data.sample import DataError, Sample
from vlmdet.models.processing import image_problem
from vlmdet.predict.decoding import CONFIDENCE_KINDS, Decoding
from vlmdet.predict.predictor import Prediction, Predictor
from vlmdet.rows import TaskSettings

ImageLike = str | Path | Image.Image | np.ndarray


def _as_image(image: ImageLike, index: int) -> tuple[Image.Image, str]:
    """An 8-bit RGB PIL image and a name for errors."""
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise DataError(f"image file not found: {image}. Fix the path")
        return open_rgb(Path(image)), str(image)
    where = f"image {index}"
    if isinstance(image, Image.Image):
        return to_rgb(image, where), where
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise DataError(f"{where}: an array image must be HxW or HxWx3 (RGB), got shape {image.shape}; convert it first")
        if arr.dtype != np.uint8:
            raise DataError(f"{where}: an array image must be uint8 (0-255), got {arr.dtype}; scale and convert it (arr.astype(np.uint8))")
        return Image.fromarray(np.ascontiguousarray(arr[..., :3])), where
    raise DataError(f"{where}: expected a path, a PIL image or a numpy array, got {type(image).__name__}")


class Detector:
    """A model, its processor and its task settings, predicting :class:`supervision.Detections`.

    Build it with :meth:`from_pretrained`. ``generation`` overrides vlmdet's greedy decoding
    (``{"num_beams": 3}``); ``confidence`` is how a box's confidence is made from its tokens'
    log-probabilities (one of :data:`~vlmdet.predict.decoding.CONFIDENCE_KINDS`).
    """

    def __init__(self, model: Any, processor: Any, settings: TaskSettings, batch_size: int = 8,
                 generation: dict[str, Any] | None = None, confidence: str = "geometric_mean") -> None:
        if confidence not in CONFIDENCE_KINDS:
            raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_KINDS)}, got {confidence!r}")
        self.model, self.processor, self.settings = model, processor, settings
        self.batch_size = batch_size
        self.decoding = Decoding(generation)
        self.confidence = confidence

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, family: str | None = None, classes: Sequence[str] | None = None,
                        device: str | None = None, **kwargs: Any) -> "Detector":
        """Load a run folder of ``vlmdet train`` (full model or LoRA adapters), an ``vlmdet export``
        folder, a base model folder or a hub id. A folder vlmdet wrote knows its family and classes;
        for a base model give ``family`` (when its config does not tell) and ``classes``."""
        from vlmdet.predict.loading import load_for_inference

        model, processor, settings = load_for_inference(path_or_id, family=family, classes=list(classes) if classes else None, device=device)
        return cls(model, processor, settings, **kwargs)

    @property
    def classes(self) -> list[str]:
        return list(self.settings.classes)

    def predict(self, images: ImageLike | Sequence[ImageLike], classes: Sequence[str] | None = None, phrase: str | None = None,
                batch_size: int | None = None, progress: bool = False):
        """Detections for one image (one :class:`supervision.Detections`) or a list (a list of them).

        ``classes``: detect these instead of the saved class list (the prompt names them; a model
        fine-tuned on other classes will mostly not find them). ``phrase``: ground this phrase instead
        (every box is ``class_id`` 0, ``class_name`` the phrase)."""
        single = isinstance(images, (str, Path, Image.Image, np.ndarray))
        batch = [images] if single else list(images)
        settings = self._settings(classes, phrase)
        samples, pil = [], {}
        for i, image in enumerate(batch):
            img, where = _as_image(image, i)
            problem = image_problem(self.processor, img.size) if self.processor is not None else None
            if problem:
                raise DataError(f"{where}: {problem}; crop or pad the image")
            sample = Sample(id=f"{i}", image_wh=img.size, boxes=[], labels=[], phrase=phrase, source=where)
            samples.append(sample)
            pil[sample.id] = img
        preds = self._predictions(samples, pil, settings, batch_size or self.batch_size, progress)
        out = [to_detections(p, s.image_wh, settings, phrase) for p, s in zip(preds, samples)]
        return out[0] if single else out

    def _predictions(self, samples: list[Sample], images: dict[str, Image.Image], settings: TaskSettings, batch_size: int,
                     progress: bool) -> list[Prediction]:
        predictor = Predictor(self.model, self.processor, settings, batch_size=batch_size, decoding=self.decoding, confidence=self.confidence)
        return predictor.predict(samples, images, progress=progress)

    @classmethod
    def from_endpoint(cls, url: str, served_model: str, model: str | Path | None = None, processor: str | Path | None = None,
                      family: str | None = None, classes: Sequence[str] | None = None, api_key_env: str | None = None,
                      concurrency: int = 4, timeout: float = 120.0, max_retries: int = 4, confidence: str = "geometric_mean",
                      cache_file: str | Path | None = None) -> "EndpointDetector":
        """A detector whose answers come from ``served_model`` behind an OpenAI-compatible server at
        ``url`` (vLLM, SGLang, TGI, ``transformers serve``, a hosted API) — the same prompt, codec and
        :class:`supervision.Detections` as :meth:`from_pretrained`.

        ``model``: the exported folder the server serves (prompt, classes, the processor's resize,
        end tokens); else ``processor`` (a folder or hub id with the processor config) and/or
        ``family``. ``classes``: the class list when ``model`` has none. Requests retry with backoff
        (``max_retries``, ``timeout``), ``concurrency`` at once; ``cache_file`` keeps every answer
        (a JSONL file) so that asking again for the same image costs no request. An image the
        server does not answer raises :class:`~vlmdet.predict.endpoint.EndpointError` naming it."""
        from vlmdet.predict.endpoint import EndpointSpec, check_served, endpoint_settings

        spec = EndpointSpec(url, served_model, model=None if model is None else str(model), processor=None if processor is None else str(processor),
                            api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, max_retries=max_retries)
        check_served(spec)
        settings, proc, generation_base = endpoint_settings(spec, family)
        if classes:
            settings.classes = list(classes)
        return EndpointDetector(spec, settings, proc, generation_base, confidence=confidence, cache_file=cache_file)

    def _settings(self, classes: Sequence[str] | None, phrase: str | None) -> TaskSettings:
        if phrase is not None:
            if not str(phrase).strip():
                raise ValueError("phrase is empty: give the words to ground, e.g. phrase='the red car'")
            return dataclasses.replace(self.settings, task="ground")
        if classes is not None:
            settings = dataclasses.replace(self.settings, classes=list(classes), task="detect")
        else:
            settings = self.settings
        if not settings.classes:
            raise ValueError("this model has no saved class list (no vlmdet.json): give the classes (predict --classes a,b,c / "
                             "classes=[...]) or a phrase to ground (--phrase / phrase=...)")
        settings.check()
        return settings


class EndpointDetector(Detector):
    """A :class:`Detector` whose answers come from a served model (:meth:`Detector.from_endpoint`)."""

    def __init__(self, spec: Any, settings: TaskSettings, processor: Any, generation_base: Any, confidence: str = "geometric_mean",
                 cache_file: str | Path | None = None) -> None:
        super().__init__(None, processor, settings, batch_size=spec.concurrency, confidence=confidence)
        self.spec = spec
        self.endpoint = spec.predictor(settings, decoding=self.decoding, confidence=confidence, generation_base=generation_base, cache_file=cache_file)

    def _predictions(self, samples: list[Sample], images: dict[str, Image.Image], settings: TaskSettings, batch_size: int,
                     progress: bool) -> list[Prediction]:
        from vlmdet.predict.endpoint import EndpointError

        self.endpoint.settings = settings  # this call's classes / phrase
        run = self.endpoint.predict(samples, images, progress=progress)
        if run.failures:
            listing = "; ".join(f"{f.source}: {f.error}" for f in run.failures[:3])
            raise EndpointError(f"{len(run.failures)} of {len(samples)} image(s) got no answer from {self.spec.url} ({listing}); "
                                "the answers received are cached: call predict again to send only the missing images")
        return [p for p in run.predictions if p is not None]


def to_detections(pred: Prediction, image_wh: tuple[int, int], settings: TaskSettings, phrase: str | None = None):
    """One :class:`Prediction` as :class:`supervision.Detections` (see the module docstring)."""
    import supervision as sv

    labels = list(pred.labels)
    if phrase is not None:
        class_id = np.zeros(len(labels), dtype=int)
        names = [phrase] * len(labels)
    else:
        index = {c: i for i, c in enumerate(settings.classes)}
        class_id = np.array([index.get(label, -1) for label in labels], dtype=int)
        names = labels
    confidence = np.asarray(pred.confidences, dtype=np.float32) if pred.confidences is not None else None
    return sv.Detections(
        xyxy=np.asarray(pred.boxes, dtype=np.float32).reshape(-1, 4),
        class_id=class_id,
        confidence=confidence,
        data={"class_name": np.array(names, dtype=object).astype(str) if names else np.array([], dtype=str)},
        metadata={"answer": pred.text, "parse_failed": bool(pred.decoded.failed), "image_wh": tuple(image_wh)},
    )
