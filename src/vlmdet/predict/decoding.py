"""Decoding on record: the generation settings every vlmdet answer is written with, and the
per-token probabilities the box confidences come from.

Why vlmdet builds the generation config itself. ``model.generate(do_sample=False, num_beams=1)``
is *not* greedy decoding of a checkpoint whose ``generation_config.json`` sets, say,
``repetition_penalty: 1.05``, ``no_repeat_ngram_size: 3`` or ``stop_strings``: transformers fills
every setting the call leaves unset from that file. Real checkpoints ship such settings, and they
silently change "greedy" answers and any before/after comparison. So a :class:`Decoding` is a
complete :class:`~transformers.GenerationConfig` — vlmdet's greedy defaults with every penalty and
n-gram ban switched off explicitly, plus the user's ``generation:`` overrides (any
``GenerationConfig`` field) — and the model's own generation config is set aside while vlmdet
generates, keeping only its token ids (bos, eos, pad, decoder start, forced bos/eos). The settings
are written into ``metrics.json`` and the reports.

Confidences: :class:`TokenLogprobs` is a logits processor placed last in the chain. Under greedy
decoding the chosen token is the arg-max of the final scores, so it records the log-probability of
that token for every row and step — two numbers per row and step, where ``output_scores`` would keep
a vocabulary-sized tensor per step. (Under sampling or beam search the chosen token is not the
arg-max; vlmdet then reports no confidences rather than wrong ones.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor

from vlmdet.config import CONFIDENCE_KINDS  # the names, defined with the settings

# vlmdet's greedy decoding: each behaviour transformers knows, set to "off" explicitly.
GREEDY: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
    "num_return_sequences": 1,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "early_stopping": False,
    "use_cache": True,
}
# What is kept from the checkpoint's own generation config: which tokens start and end an answer.
TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id")


def generation_fields() -> set[str]:
    """Every setting a ``GenerationConfig`` has (what ``generation:`` may set)."""
    return {k for k in GenerationConfig().to_dict() if not k.startswith("_") and k != "transformers_version"}


def check_generation(values: dict[str, Any], section: str = "generation") -> None:
    """Unknown fields and invalid combinations of ``values`` as one clear ``ValueError``."""
    import difflib
    import warnings

    known = generation_fields()
    unknown = sorted(set(values) - known)
    if unknown:
        close = [c for k in unknown for c in difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.75)]
        raise ValueError(f"unknown setting(s) {', '.join(f'{section}.{k}' for k in unknown)}: not GenerationConfig fields"
                         + (f" (did you mean {', '.join(f'{section}.{c}' for c in close)}?)" if close else ""))
    for key in ("num_beams", "num_beam_groups", "num_return_sequences"):
        if key in values and (not isinstance(values[key], int) or values[key] < 1):
            raise ValueError(f"{section}.{key} must be a positive integer, got {values[key]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GenerationConfig(**{**GREEDY, **values}).validate(strict=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{section}: {exc}") from None


class Decoding:
    """The complete decoding settings of a model: greedy (:data:`GREEDY`) + ``overrides``.

    ``settings`` is what is on record (the explicit values, overrides applied); :meth:`config` is
    the ``GenerationConfig`` handed to ``generate`` for a given model; :meth:`applied` sets the
    model's own generation config aside while generating.
    """

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.overrides = dict(overrides or {})
        check_generation(self.overrides)
        self.settings = {**GREEDY, **self.overrides}

    @property
    def greedy(self) -> bool:
        return not self.settings.get("do_sample") and int(self.settings.get("num_beams", 1)) == 1

    def record(self) -> dict[str, Any]:
        """What metrics.json and the reports state: the settings, and what differs from greedy."""
        return {"settings": dict(self.settings), "overrides": dict(self.overrides), "greedy": self.greedy}

    def config(self, model: Any, max_new_tokens: int) -> GenerationConfig:
        return self.config_from(getattr(_generating(model), "generation_config", None), max_new_tokens)

    def config_from(self, base: GenerationConfig | None, max_new_tokens: int) -> GenerationConfig:
        """The complete config over ``base`` (a checkpoint's own generation config): only its token ids kept."""
        base = base or GenerationConfig()
        tokens = {k: getattr(base, k, None) for k in TOKEN_FIELDS if getattr(base, k, None) is not None}
        return GenerationConfig(**{**tokens, **self.settings, "max_new_tokens": int(self.settings.get("max_new_tokens") or max_new_tokens)})

    @contextlib.contextmanager
    def applied(self, model: Any, max_new_tokens: int) -> Iterator[GenerationConfig]:
        """Yield the config to pass to ``generate``; meanwhile the model's own is replaced by it, so
        that nothing unset is filled from the checkpoint's ``generation_config.json``."""
        config = self.config(model, max_new_tokens)
        target = _generating(model)
        saved = getattr(target, "generation_config", None)
        try:
            if saved is not None:
                target.generation_config = config
            yield config
        finally:
            if saved is not None:
                target.generation_config = saved


def _generating(model: Any) -> Any:
    """The module whose ``generation_config`` ``generate`` reads (a PEFT model's base model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class TokenLogprobs(LogitsProcessor):
    """Records, per generation step, the log-probability of the arg-max token of the final scores
    (the chosen token under greedy decoding) and that token: ``logprobs`` and ``tokens`` are
    ``(batch, steps)`` after generation. Must be the last processor; changes no score."""

    def __init__(self) -> None:
        self._logprobs: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = torch.log_softmax(scores.float(), dim=-1).max(dim=-1)
        self._logprobs.append(best.values.detach().cpu())
        self._tokens.append(best.indices.detach().cpu())
        return scores

    @property
    def logprobs(self) -> torch.Tensor:
        return torch.stack(self._logprobs, dim=1) if self._logprobs else torch.zeros(0, 0)

    @property
    def tokens(self) -> torch.Tensor:
        return torch.stack(self._tokens, dim=1) if self._tokens else torch.zeros(0, 0, dtype=torch.long)


def token_char_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """``(text, spans)``: the decoded text of ``ids`` and each token's ``(start, end)`` in it.

    Token by token when the pieces add up to the whole (ASCII answers: coordinates, JSON, tags);
    else by decoding growing prefixes (a multi-byte character split over tokens).
    """
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    text = tokenizer.decode(list(ids), **kw)
    pieces = tokenizer.batch_decode([[i] for i in ids], **kw)  # one call: the per-token loop costs more than generation's host work
    if "".join(pieces) != text:
        pieces, done = [], ""
        for k in range(len(ids)):
            now = tokenizer.decode(list(ids[: k + 1]), **kw)
            pieces.append(now[len(done):])
            done = now
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return text, spans


def strip_answer(text: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
    """``text`` without surrounding whitespace, and its token spans moved with it (every vlmdet answer
    is scored stripped: the local predictor's and a server's alike)."""
    lead = len(text) - len(text.lstrip())
    return text.strip(), [(max(0, s - lead), max(0, e - lead)) for s, e in spans]


def check_confidence(kind: str) -> str:
    """``kind`` if it is one of :data:`~vlmdet.config.CONFIDENCE_KINDS`, else a ``ValueError`` naming
    them; predictors call it when they are built, so a wrong name fails before any image is generated."""
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"unknown confidence {kind!r}: use one of {', '.join(CONFIDENCE_KINDS)}")
    return kind


def span_confidence(span: tuple[int, int], token_spans: Sequence[tuple[int, int]], logprobs: Sequence[float], kind: str = "geometric_mean") -> float:
    """Confidence of one box from the log-probabilities of the tokens that wrote it.

    ``span`` is the box's characters in the answer (its coordinates and label); the tokens counted
    are those overlapping it. ``geometric_mean``: exp(mean log p) — vlmdet's default (see the
    README for the alternatives measured on the demo); ``min``: the least sure token; ``mean``: the
    mean token probability; ``product``: the probability of the whole span (shrinks with length).
    """
    import math

    lo, hi = span
    picked = [lp for (s, e), lp in zip(token_spans, logprobs) if s < hi and e > lo]
    if not picked:
        return float("nan")
    if kind == "geometric_mean":
        return math.exp(sum(picked) / len(picked))
    if kind == "min":
        return math.exp(min(picked))
    if kind == "mean":
        return sum(math.exp(lp) for lp in picked) / len(picked)
    if kind == "product":
        return math.exp(sum(picked))
    check_confidence(kind)
    raise AssertionError(f"confidence {kind!r} is listed in CONFIDENCE_KINDS but not computed here")
