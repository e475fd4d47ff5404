"""A model that answers, for tests: real boxes without training luck.

:class:`AnsweringModel` stands in for a loaded VLM. It keeps the real model's config, parameters
and generation config, so the predictor treats it exactly like the model, and its ``generate``
writes the answer the test chose for each image. It recognises an image by its pixel values as the
processor prepared them (one image at a time, hashed), so nothing tells it which sample a row is:
a predictor that sent an image to the wrong row, or paired an answer with the wrong sample after
sorting by size, gets the other image's answer and the test sees it.

``answers`` fixture: ``answers.register(model_dir, samples, text_of)`` and every model loaded from
``model_dir`` through vlmdet's loader (eval, predict, the Detector API...) answers ``text_of(sample)``
for the image of each sample.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def _key(pixels: torch.Tensor) -> str:
    return hashlib.sha1(torch.round(pixels.detach().float().cpu() * 1e3).to(torch.int64).numpy().tobytes()).hexdigest()


def image_keys(processor: Any, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None) -> list[str]:
    """One key per image of a processed batch (Qwen: patches split by grid; others: one row per image)."""
    if image_grid_thw is not None:
        sizes = image_grid_thw.prod(dim=-1).tolist()
        return [_key(chunk) for chunk in torch.split(pixel_values, sizes)]
    return [_key(row) for row in pixel_values]


def key_of_image(processor: Any, image: Any) -> str:
    out = processor.image_processor(images=[image], return_tensors="pt")
    (key,) = image_keys(processor, out["pixel_values"], out.get("image_grid_thw"))
    return key


class AnsweringModel(torch.nn.Module):
    """See the module docstring. ``texts``: image key -> answer text; ``token_prob``: the probability
    each answer token gets in the fake generation scores (for confidence tests)."""

    def __init__(self, model: torch.nn.Module, processor: Any, texts: dict[str, str], token_prob: float | Callable[[str, int], float] = 0.9) -> None:
        super().__init__()
        self.inner = model
        self.processor = processor
        self.texts = texts
        self.token_prob = token_prob
        self.calls: list[dict[str, Any]] = []

    @property
    def config(self):
        return self.inner.config

    @property
    def generation_config(self):
        return self.inner.generation_config

    @generation_config.setter
    def generation_config(self, value):
        self.inner.generation_config = value

    def forward(self, *args, **kwargs):
        """The real model's forward (training steps and log-probabilities use it)."""
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, image_grid_thw=None, generation_config=None, logits_processor=None, max_new_tokens: int | None = None, **kwargs):
        """The registered answers as generated token ids; every logits processor sees one score row
        per step in which the answer's token has probability ``token_prob`` (the arg-max)."""
        tok = self.processor.tokenizer
        keys = image_keys(self.processor, pixel_values, image_grid_thw)
        unknown = [k for k in keys if k not in self.texts]
        assert not unknown, f"the predictor sent {len(unknown)} image(s) the test never registered"
        texts = [self.texts[k] for k in keys]
        budget = max_new_tokens or getattr(generation_config, "max_new_tokens", None) or 64
        self.calls.append({"texts": texts, "keys": keys, "prompts": tok.batch_decode(input_ids), "generation_config": generation_config})
        eos = tok.eos_token_id
        seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        start = []  # generated tokens: for an encoder-decoder, after the decoder start token
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"][: budget - 1] + [eos]
            start.append([tok.bos_token_id, *ids] if seq2seq else ids)
        width = max(len(r) for r in start)
        pad = tok.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in start], dtype=torch.long)
        vocab = self.inner.get_output_embeddings().weight.shape[0]
        if seq2seq:  # what an encoder-decoder's output starts with
            decoder_start = getattr(self.inner.generation_config, "decoder_start_token_id", None)
            so_far = torch.full((len(texts), 1), decoder_start if decoder_start is not None else eos)
        else:
            so_far = input_ids
        for t in range(new.shape[1]):
            scores = torch.full((len(texts), vocab), 0.0)
            for i, text in enumerate(texts):
                k = max(0, t - 1) if seq2seq else t  # the index within the answer (an encoder-decoder's first token is <s>)
                p = self.token_prob(text, k) if callable(self.token_prob) else self.token_prob
                scores[i] = math.log((1 - p) / (vocab - 1))
                scores[i, new[i, t]] = math.log(p)
            for processor in logits_processor or []:
                scores = processor(so_far, scores)
            so_far = torch.cat([so_far, new[:, t : t + 1].to(so_far.device)], dim=1)
        return so_far


@dataclass
class AnswerBook:
    """Answers per model folder, applied by every vlmdet load of that folder (see the module docstring)."""

    by_model: dict[str, list[tuple[Any, str]]] = field(default_factory=dict)
    token_prob: dict[str, Any] = field(default_factory=dict)
    loaded: list[AnsweringModel] = field(default_factory=list)

    def register(self, model_dir: str | Path, samples: Sequence[Any], text_of: Callable[[Any], str], token_prob: Any = 0.9) -> None:
        self.by_model[str(Path(model_dir).resolve())] = [(s.load_image(), text_of(s)) for s in samples]
        self.token_prob[str(Path(model_dir).resolve())] = token_prob

    def wrap(self, src: str, model: Any, processor: Any) -> Any:
        pairs = self.by_model.get(str(Path(src).resolve()))
        if pairs is None:
            return model
        texts = {key_of_image(processor, image): text for image, text in pairs}
        answering = AnsweringModel(model, processor, texts, self.token_prob[str(Path(src).resolve())])
        self.loaded.append(answering)
        return answering
