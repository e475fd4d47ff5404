"""Batched greedy generation -> decode -> boxes in original pixels.

The same code serves ``vlmdet eval``, ``vlmdet predict``, the in-training
``DetectionEvalCallback`` and the before/after report, so every number vlmdet prints comes from
one prompt builder, one decoding setup and one codec.

Batches are built from samples of similar prompt length (fewer pad tokens), padded on the left,
and generated with the KV cache; the answer is decoded with special tokens kept (Qwen2-VL's box
tokens are special) and only pad/end tokens stripped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmdet.codecs import Decoded
from vlmdet.data.sample import Sample
from vlmdet.rows import TaskSettings
from vlmdet.models.loading import model_dtype


@dataclass
class Prediction:
    """One model answer: raw text and what the codec recovered (original pixels)."""

    sample_id: str
    text: str
    decoded: Decoded

    @property
    def boxes(self) -> np.ndarray:
        return self.decoded.boxes

    @property
    def labels(self) -> list[str]:
        return self.decoded.labels


def _strip_specials(text: str, tokens: Iterable[str]) -> str:
    for tok in tokens:
        if tok:
            text = text.replace(tok, "")
    return text.strip()


class Predictor:
    """Generate answers for samples with ``model`` + ``processor`` under ``settings``.

    Args:
        batch_size: images per ``generate`` call.
        max_new_tokens: answer budget (default: ``settings.max_new_tokens``).
        images: optional cache ``{sample.id: PIL image}`` to avoid decoding files again.
    """

    def __init__(self, model: Any, processor: Any, settings: TaskSettings, batch_size: int = 8, max_new_tokens: int | None = None) -> None:
        self.model, self.processor, self.settings = model, processor, settings
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens or settings.max_new_tokens)
        tok = getattr(processor, "tokenizer", processor)
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self._strip = {tok.pad_token, tok.eos_token, *(tok.convert_ids_to_tokens(i) for i in eos_ids)} - {None}
        self.layout = settings.family_spec.answer_layout
        self.seq2seq = self.layout == "seq2seq"
        if self.seq2seq:  # the decoder's answer is framed by <s> ... </s> (Florence-2)
            self._strip |= {tok.bos_token} - {None}

    def _prompt_text(self, sample: Sample) -> str:
        if self.seq2seq:  # Florence-2: the task prompt goes to the encoder; the processor frames it
            return self.settings.prompt(sample)
        if self.layout == "prefix_suffix":  # PaliGemma: the prompt is the prefix itself
            return getattr(self.processor, "image_token", "") + self.settings.prompt(sample)
        return self.processor.apply_chat_template(self.settings.prompt_messages(sample), add_generation_prompt=True)

    @torch.no_grad()
    def generate_texts(self, samples: Sequence[Sample], images: Sequence[Any]) -> list[str]:
        """Raw answers (special tokens kept, pad/eos stripped) for one batch."""
        prompts = [self._prompt_text(s) for s in samples]
        imgs = list(images) if self.seq2seq else [[img] for img in images]
        inputs = self.processor(images=imgs, text=prompts, padding=True, padding_side="left", return_tensors="pt")
        device = next(self.model.parameters()).device
        dtype = model_dtype(self.model)
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        new = out if self.seq2seq else out[:, inputs["input_ids"].shape[1] :]  # a decoder-only model echoes the prompt
        tok = getattr(self.processor, "tokenizer", self.processor)
        texts = tok.batch_decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return [_strip_specials(t, self._strip) for t in texts]

    def predict(self, samples: Sequence[Sample], images: dict[str, Any] | None = None, progress: bool = False, desc: str = "predict") -> list[Prediction]:
        """Predictions for ``samples``, in their order."""
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(samples)), key=lambda i: (samples[i].image_wh[0] * samples[i].image_wh[1], i))
        results: dict[int, Prediction] = {}
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(samples), desc=desc, unit="img", leave=False)
        try:
            for batch in batches:
                bs = [samples[i] for i in batch]
                imgs = [(images or {}).get(s.id) or s.load_image() for s in bs]
                for i, s, text in zip(batch, bs, self.generate_texts(bs, imgs)):
                    results[i] = Prediction(s.id, text, self.settings.decode(text, s))
                if bar is not None:
                    bar.update(len(bs))
        finally:
            if bar is not None:
                bar.close()
            if was_training:
                self.model.train()
        return [results[i] for i in range(len(samples))]


def evaluate_predictions(samples: Sequence[Sample], predictions: Sequence[Prediction], settings: TaskSettings):
    """COCO metrics of ``predictions`` against ``samples`` (same order)."""
    from vlmdet.metrics import DetectionMetrics

    grounding = settings.task == "ground" or any(s.phrase for s in samples)
    metrics = DetectionMetrics(None if grounding else settings.classes)
    for s, p in zip(samples, predictions):
        metrics.update(s.image_wh, s.boxes, s.labels, p.boxes, p.labels, iscrowd=s.iscrowd, parse_failed=p.decoded.failed)
    return metrics.compute()
