"""The training collator: TRL's prompt/completion path, plus the checks it does not make.

TRL's ``DataCollatorForVisionLanguageModeling`` already builds completion-only labels for
prompt/completion rows (prompt, image and pad tokens are -100; the target text and the end-of-turn
tokens are trained), so vlmdet uses it. It wraps it for three reasons:

* TRL truncates at ``max_length`` (cutting image tokens or the target); vlmdet never truncates and
  raises an error naming the sample instead;
* the number of image tokens must equal the number of image features (a mismatch is the
  "image features and image tokens do not match" crash, found here with the sample's name);
* pixel values are cast to the model's dtype (bf16 training feeds bf16 pixels).

The family's ``answer_layout`` says how prompt and answer are laid out. ``"chat"`` is TRL's
prompt/completion path above. ``"prefix_suffix"`` (PaliGemma, no chat template) takes the prompt as a
*prefix* and the target as a *suffix*: ``processor(text=prefix, images=..., suffix=target)`` builds the labels (prefix and
image tokens -100, the target and ``<eos>`` trained) and ``token_type_ids`` (1 on the suffix),
which drive PaliGemma's prefix-LM attention. TRL's prompt/completion path marks completions as
type 0 — bidirectional attention over the answer, i.e. a model that learns to copy — so for this
layout vlmdet uses the processor's own suffix path instead.

``"seq2seq"`` (encoder-decoder models, Florence-2) takes the prompt and image in the encoder and
the target as decoder ``labels`` (``<s>`` target ``</s>``, pads -100): nothing of the prompt can be
trained, by construction.

Example::

    >>> collate = DetectionCollator(processor, layout=family.answer_layout, dtype=torch.float32)
    >>> batch = collate([settings.row(sample) | {"id": sample.id} for sample in samples])
    >>> batch["labels"]  # -100 everywhere except the target text and "<|im_end|>\\n"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vlmdet.models.processing import image_feature_token_id


class SequenceTooLongError(ValueError):
    """A sample does not fit ``max_length`` and would have to be truncated."""


@dataclass
class DetectionCollator:
    """Collate TRL prompt/completion rows (with an optional ``"id"`` per row) into a training batch.

    Args:
        processor: the model's processor.
        max_length: longest allowed sequence (``None``: no limit). Longer rows raise
            :class:`SequenceTooLongError` naming the sample: lower ``max_pixels`` or raise the limit.
        dtype: floating dtype for pixel values (the model's).
        image_token_id: id of the image placeholder token (checked against the features).
        completion_only: ``True`` (always, in real use). ``False`` trains every non-pad token —
            prompt and image tokens included — the classic collator mistake, kept for ablations
            and ``doctor`` tests.
        layout: the family's ``answer_layout`` (``chat`` | ``prefix_suffix`` | ``seq2seq``).
    """

    processor: Any
    max_length: int | None = None
    dtype: torch.dtype = torch.float32
    image_token_id: int | None = None
    completion_only: bool = True
    layout: str = "chat"
    _trl: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        if self.layout not in ("chat", "prefix_suffix", "seq2seq"):
            raise ValueError(f"unknown answer layout {self.layout!r}; use chat, prefix_suffix or seq2seq")
        self._trl = DataCollatorForVisionLanguageModeling(processor=self.processor, max_length=None, completion_only_loss=self.completion_only)
        if self.image_token_id is None:
            self.image_token_id = image_feature_token_id(self.processor)

    def _check_chat_template(self) -> None:
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(
                f"{type(self.processor).__name__} has no chat template, and this family answers in a chat turn: vlmdet cannot "
                "build completion-only labels. Use the model's instruct/chat checkpoint, or set processor.chat_template."
            )

    def _collate_prefix_suffix(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prefixes = [_text_of(r["prompt"]) for r in rows]
        suffixes = [_text_of(r["completion"]) for r in rows]
        image_token = getattr(self.processor, "image_token", "")
        batch = dict(self.processor(
            text=[image_token * len(r["images"]) + p for r, p in zip(rows, prefixes)], images=[r["images"] for r in rows],
            suffix=suffixes, padding="longest", padding_side="right", return_tensors="pt",
        ))
        if not self.completion_only:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch

    def _collate_seq2seq(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.completion_only:
            raise ValueError("labels=all has no meaning for an encoder-decoder model: the prompt is the encoder's input, never a label")
        batch = dict(self.processor(
            text=[_text_of(r["prompt"]) for r in rows], images=[r["images"][0] for r in rows], padding="longest", return_tensors="pt",
        ))
        target = self.processor.tokenizer([_text_of(r["completion"]) for r in rows], padding="longest", return_tensors="pt")
        batch["labels"] = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        return batch

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [r.get("id", f"row {i}") for i, r in enumerate(rows)]
        clean = [{k: v for k, v in r.items() if k in ("images", "prompt", "completion")} for r in rows]
        if self.layout == "seq2seq":
            batch = self._collate_seq2seq(clean)
        elif self.layout == "prefix_suffix":
            batch = self._collate_prefix_suffix(clean)
        else:
            self._check_chat_template()
            batch = self._trl(clean)
        lengths = batch["attention_mask"].sum(dim=1)
        if self.max_length is not None and int(lengths.max()) > self.max_length:
            i = int(lengths.argmax())
            raise SequenceTooLongError(
                f"sample {ids[i]} needs {int(lengths[i])} tokens > max_length={self.max_length}; vlmdet never truncates "
                f"(it would cut image tokens or the target). Lower max_pixels, or raise max_length."
            )
        self._check_image_tokens(batch, ids)
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def _check_image_tokens(self, batch: dict[str, Any], ids: list[str]) -> None:
        if self.image_token_id is None:
            return
        grid = batch.get("image_grid_thw")
        if grid is not None:  # Qwen: one token per merged patch of each resized image
            merge = getattr(self.processor.image_processor, "merge_size", 1) ** 2
            expected = (grid.prod(dim=-1) // merge).tolist()
        elif hasattr(self.processor, "start_image_token") and "pixel_values" in batch:
            # InternVL: image_seq_length tokens per tile, a variable number of tiles per image (the
            # processor does not say which row has how many): compare the batch's totals
            found = int((batch["input_ids"] == self.image_token_id).sum())
            expected_total = self.processor.image_seq_length * int(batch["pixel_values"].shape[0])
            if found != expected_total:
                raise ValueError(f"samples {', '.join(map(str, ids))}: {found} image tokens in the text but {expected_total} image features; "
                                 "the prompt was cut or the processor changed")
            return
        elif hasattr(self.processor, "image_seq_length") and self.layout != "seq2seq":  # PaliGemma, Gemma 3: a fixed number per image
            expected = [self.processor.image_seq_length] * len(ids)
        else:  # SmolVLM/Idefics3: the processor expands and checks the image tokens itself
            return
        found = (batch["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        # one image per row: compare row by row
        if len(expected) == len(found):
            for i, (e, f) in enumerate(zip(expected, found)):
                if e != f:
                    raise ValueError(f"sample {ids[i]}: {f} image tokens in the text but {e} image features; the prompt was cut or the processor changed")


def _text_of(messages: Any) -> str:
    """The text of a conversational prompt/completion (or the string itself)."""
    if isinstance(messages, str):
        return messages
    parts = []
    for m in messages:
        content = m["content"]
        parts += [content] if isinstance(content, str) else [c["text"] for c in content if c.get("type") == "text"]
    return "".join(parts)
