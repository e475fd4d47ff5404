"""Batched generation -> decode -> boxes in original pixels, each with a confidence.

The same code serves ``vlmdet eval``, ``vlmdet predict``, the in-training
``DetectionEvalCallback``, the before/after report and the RL evaluation, so every number vlmdet
prints comes from one prompt builder, one decoding setup (:class:`~vlmdet.predict.decoding.Decoding`,
greedy by default, on record) and one codec.

Batches are built from samples of similar image size (fewer pad tokens), padded on the left, and
generated with the KV cache. Under several processes (``torchrun`` / ``accelerate launch``) the
batches — the same batches one process would make — are dealt round-robin to the processes and the
predictions gathered, so every process returns every image's prediction, each image scored once,
with the answers one process would give. With a sharded model (FSDP), whose every forward is a
collective, each process makes the same number of ``generate`` calls (a process short of batches
repeats its last one and drops the result) and generates with ``synced_gpus``. The answer is cut at the token level — after the prompt (decoder-only)
or the decoder start (encoder-decoder), up to the first end token — then decoded with special tokens
kept (Qwen2-VL's box tokens are special). Each box's confidence comes from the log-probabilities of
the tokens that wrote it (:func:`~vlmdet.predict.decoding.span_confidence`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList

from vlmdet.codecs import Decoded
from vlmdet.data.sample import Sample
from vlmdet.models.loading import model_dtype
from vlmdet.predict.decoding import Decoding, TokenLogprobs, check_confidence, span_confidence, strip_answer, token_char_spans
from vlmdet.rows import TaskSettings


@dataclass
class Prediction:
    """One model answer: raw text, what the codec recovered (original pixels), a confidence per box.

    ``confidences`` is ``None`` when the decoding measured none (sampling or beam search)."""

    sample_id: str
    text: str
    decoded: Decoded
    confidences: list[float] | None = None

    @property
    def boxes(self) -> np.ndarray:
        return self.decoded.boxes

    @property
    def labels(self) -> list[str]:
        return self.decoded.labels


@dataclass
class Answer:
    """One generated answer: its text, each token's characters in it and log-probability."""

    text: str
    token_spans: list[tuple[int, int]] = field(default_factory=list)
    logprobs: list[float] | None = None


class Predictor:
    """Generate answers for samples with ``model`` + ``processor`` under ``settings``.

    Args:
        batch_size: images per ``generate`` call.
        max_new_tokens: answer budget (default: ``settings.max_new_tokens``).
        decoding: a :class:`Decoding` or its overrides (``{"num_beams": 3}``); default greedy.
        confidence: how a box's confidence is made from its tokens' probabilities
            (:data:`~vlmdet.predict.decoding.CONFIDENCE_KINDS`).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        settings: TaskSettings,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        decoding: Decoding | dict[str, Any] | None = None,
        confidence: str = "geometric_mean",
    ) -> None:
        self.model, self.processor, self.settings = model, processor, settings
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens or settings.max_new_tokens)
        self.decoding = decoding if isinstance(decoding, Decoding) else Decoding(decoding)
        self.confidence = check_confidence(confidence)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.layout = settings.family_spec.answer_layout
        self.seq2seq = self.layout == "seq2seq"
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self._end_ids = (eos_ids | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}) - {None}

    def _prompt_text(self, sample: Sample) -> str:
        if self.seq2seq:  # Florence-2: the task prompt goes to the encoder; the processor frames it
            return self.settings.prompt(sample)
        if self.layout == "prefix_suffix":  # PaliGemma: the prompt is the prefix itself
            return getattr(self.processor, "image_token", "") + self.settings.prompt(sample)
        return self.processor.apply_chat_template(self.settings.prompt_messages(sample), add_generation_prompt=True)

    def _answer_ids(self, row: list[int]) -> tuple[int, list[int]]:
        """``(start, ids)``: the answer's tokens — after the decoder start and ``<s>`` (encoder-decoder),
        up to the first end token — and where they start in ``row``."""
        start = 0
        if self.seq2seq:
            start = 1  # the decoder start token (BART: </s>, also an end token)
            if len(row) > 1 and row[1] == self.tokenizer.bos_token_id:
                start = 2
        rest = row[start:]
        cut = next((i for i, t in enumerate(rest) if t in self._end_ids), len(rest))
        return start, rest[:cut]

    @torch.no_grad()
    def generate_answers(self, samples: Sequence[Sample], images: Sequence[Any]) -> list[Answer]:
        """Answers for one batch (special tokens kept, end tokens cut), with token log-probabilities."""
        prompts = [self._prompt_text(s) for s in samples]
        imgs = list(images) if self.seq2seq else [[img] for img in images]
        inputs = self.processor(images=imgs, text=prompts, padding=True, padding_side="left", return_tensors="pt")
        device = next(self.model.parameters()).device
        dtype = model_dtype(self.model)
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        recorder = TokenLogprobs() if self.decoding.greedy else None
        extra = {"synced_gpus": True} if self._sharded else {}
        with self.decoding.applied(self.model, self.max_new_tokens) as config, self._root_unsharded():
            out = self.model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList([recorder] if recorder else []), **extra)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        new = sequences if self.seq2seq else sequences[:, inputs["input_ids"].shape[1] :]  # a decoder-only model echoes the prompt
        step_logprobs = recorder.logprobs.tolist() if recorder is not None and recorder.logprobs.numel() else None
        answers = []
        for b, row in enumerate(new.tolist()):
            start, ids = self._answer_ids(row)
            text, spans = token_char_spans(self.tokenizer, ids)
            logprobs = None
            if step_logprobs is not None:
                # generation step k wrote the k-th new token; an encoder-decoder's row starts with the
                # decoder start token, which no step wrote
                first = start - 1 if self.seq2seq else start
                steps = step_logprobs[b][first : first + len(ids)]
                logprobs = steps if len(steps) == len(ids) else None
            answers.append(Answer(*strip_answer(text, spans), logprobs))
        return answers

    def generate_texts(self, samples: Sequence[Sample], images: Sequence[Any]) -> list[str]:
        """Raw answers (special tokens kept, end tokens cut) for one batch."""
        return [a.text for a in self.generate_answers(samples, images)]

    def _prediction(self, sample: Sample, answer: Answer) -> Prediction:
        return prediction_of(self.settings, sample, answer, self.confidence)

    @contextlib.contextmanager
    def _root_unsharded(self):
        """FSDP2 gathers a module's parameters in its forward hook; transformers' generate runs the
        vision encoder's first layers (patch embedding, held by the root unit) outside the root's
        forward, so the root's own parameters are gathered here for the whole generate call."""
        from torch.distributed.fsdp import FSDPModule

        root = self.model if isinstance(self.model, FSDPModule) else None
        if root is None or not self._sharded:
            yield
            return
        root.unshard()
        try:
            yield
        finally:
            root.reshard()

    @property
    def _sharded(self) -> bool:
        """Parameters split over processes (FSDP2's DTensors): every forward is a collective."""
        from vlmdet.distributed import world_size

        if world_size() <= 1:
            return False
        from torch.distributed.tensor import DTensor

        return any(isinstance(p, DTensor) for p in self.model.parameters())

    def predict(self, samples: Sequence[Sample], images: dict[str, Any] | None = None, progress: bool = False, desc: str = "predict") -> list[Prediction]:
        """Predictions for ``samples``, in their order (all of them on every process)."""
        from vlmdet.distributed import gather, is_main_process, rank, world_size

        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(samples)), key=lambda i: (samples[i].image_wh[0] * samples[i].image_wh[1], i))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        world = world_size()
        mine = batches[rank() :: world]
        if self._sharded:  # the same number of generate calls on every process
            rounds = -(-len(batches) // world)
            mine = mine + [mine[-1] if mine else batches[0]] * (rounds - len(mine)) if batches else mine
        results: dict[int, Prediction] = {}
        bar = None
        if progress and is_main_process():
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(b) for b in mine), desc=desc, unit="img", leave=False)
        try:
            for batch in mine:
                bs = [samples[i] for i in batch]
                imgs = [(images or {}).get(s.id) or s.load_image() for s in bs]
                for i, s, answer in zip(batch, bs, self.generate_answers(bs, imgs)):
                    results[i] = self._prediction(s, answer)
                if bar is not None:
                    bar.update(len(bs))
        finally:
            if bar is not None:
                bar.close()
            if was_training:
                self.model.train()
        if world > 1:
            results = dict(gather(sorted(results.items())))
        return [results[i] for i in range(len(samples))]


def prediction_of(settings: TaskSettings, sample: Sample, answer: Answer, confidence: str = "geometric_mean") -> Prediction:
    """``answer`` decoded for ``sample``: its boxes in original pixels, each with the confidence of the
    tokens that wrote it (when the answer has log-probabilities)."""
    decoded = settings.decode(answer.text, sample)
    confidences = None
    if answer.logprobs is not None:
        confidences = [span_confidence(span, answer.token_spans, answer.logprobs, confidence) for span in decoded.spans]
        confidences = [0.0 if math.isnan(c) else c for c in confidences]
    return Prediction(sample.id, answer.text, decoded, confidences)


def evaluate_predictions(samples: Sequence[Sample], predictions: Sequence[Prediction], settings: TaskSettings, confidence: str = "geometric_mean"):
    """The split's :class:`~vlmdet.metrics.DetectionResult` of ``predictions`` against ``samples`` (same
    order): AP with constant scores, and with the predictions' confidences when they have them, under
    ``by_score[confidence]`` (the setting the predictor computed them with)."""
    from vlmdet.metrics import DetectionMetrics

    grounding = settings.task == "ground" or any(s.phrase for s in samples)
    metrics = DetectionMetrics(None if grounding else settings.classes, confidence_kind=confidence)
    for s, p in zip(samples, predictions):
        metrics.update(s.image_wh, s.boxes, s.labels, p.boxes, p.labels, confidences=p.confidences, iscrowd=s.ignored, parse_failed=p.decoded.failed)
    return metrics.compute()
