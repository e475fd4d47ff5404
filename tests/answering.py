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


@dataclass
class FakeScores:
    """What ``generate(..., return_dict_in_generate=True, output_scores=True)`` returns."""

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None


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

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, image_grid_thw=None, max_new_tokens: int = 64, **kwargs):
        tok = self.processor.tokenizer
        keys = image_keys(self.processor, pixel_values, image_grid_thw)
        unknown = [k for k in keys if k not in self.texts]
        assert not unknown, f"the predictor sent {len(unknown)} image(s) the test never registered"
        texts = [self.texts[k] for k in keys]
        self.calls.append({"texts": texts, "prompts": tok.batch_decode(input_ids), "kwargs": {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}})
        eos = tok.eos_token_id
        seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        rows = []
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"][:max_new_tokens - 1] + [eos]
            if seq2seq:  # decoder start, then <s> answer </s> (Florence-2)
                ids = [self.config.decoder_start_token_id if hasattr(self.config, "decoder_start_token_id") else eos, tok.bos_token_id, *ids]
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        sequences = new if seq2seq else torch.cat([input_ids, new.to(input_ids.device)], dim=1)
        if not kwargs.get("return_dict_in_generate"):
            return sequences
        vocab = self.inner.get_output_embeddings().weight.shape[0] if hasattr(self.inner, "get_output_embeddings") else len(tok)
        steps = []
        for t in range(new.shape[1]):
            logp = torch.full((len(rows), vocab), -30.0)
            for i, r in enumerate(rows):
                tid = r[t] if t < len(r) else pad
                p = self.token_prob(texts[i], t) if callable(self.token_prob) else self.token_prob
                logp[i] = torch.log(torch.tensor((1 - p) / (vocab - 1)))
                logp[i, tid] = torch.log(torch.tensor(p))
            steps.append(logp)
        return FakeScores(sequences, tuple(steps) if kwargs.get("output_scores") else None, tuple(steps) if kwargs.get("output_logits") else None)


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
