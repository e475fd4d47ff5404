"""What vlmdet needs to know about one model family, in one record.

A family module (``qwen2_5_vl.py``, ``paligemma.py``, ...) builds one :class:`Family` and the
registry in ``__init__`` lists it. Everything family-specific lives there: which transformers
``model_type`` values belong to it, its codec and codec settings, its prompt style, default LoRA
targets, how to tell vision tower / projector / language-model parameters apart, and the recipe
for an offline tiny model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class TinySpec:
    """Sizes of an offline tiny model. Defaults give ~1 M parameters and ~0.1 s/step on 2 CPU cores.

    ``max_pixels`` bounds the processor's resize (and so the number of image tokens); ``vocab_size``
    is the size of the locally trained BPE vocabulary before special tokens.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_hidden_size: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    vocab_size: int = 1000
    # Rotary base of the language model. Tiny models use a small one: with head_dim 32, Qwen's
    # M-RoPE gives the width axis the lowest frequencies, and at base 10 000 those barely turn over
    # a 4-8 token image grid, leaving the model nearly blind to x positions.
    rope_theta: float = 10.0
    mrope_section: tuple[int, ...] | None = None  # (t, h, w) frequency pairs; None = family default
    # Pixels per side of a vision patch (Qwen families); None = the family's own (14; Qwen3-VL 16).
    # The processor and the codec's resize factor follow it. A tiny vision tower trained from random
    # weights tells shapes apart far sooner at 7: a 14-pixel patch holds too little of an outline.
    vision_patch_size: int | None = None
    min_pixels: int = 56 * 56
    max_pixels: int = 128 * 128
    class_names: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Family:
    """One model family. See the module docstring; every field documents one convention.

    Attributes:
        name: registry key, e.g. ``"qwen2_5_vl"``; stored in saved vlmdet settings.
        model_types: transformers ``config.model_type`` values that belong to this family.
        codec: name of the codec in :mod:`vlmdet.codecs` that writes/reads this family's boxes.
        prompt_style: style name understood by :func:`vlmdet.prompts.build_prompt`.
        lora_targets: default LoRA target module names (language model only).
        vision_lora_targets: module names added when LoRA on the vision tower is asked for.
        vision_prefixes / projector_prefixes: parameter-name fragments of the vision tower and the
            vision-to-text projector; every other parameter counts as language model.
        build_tiny: ``build_tiny(out_dir, spec)`` writes an offline tiny model + processor.
        codec_settings: ``codec_settings(processor) -> dict`` extra settings for the codec read off
            the processor (e.g. Qwen2.5-VL's resize factor and min/max pixels).
        answer_layout: where the prompt and the answer sit in the model's input, decided here once
            and read by the collator, the predictor and ``doctor``:
            ``"chat"`` — a chat template, prompt as the user turn and the answer as the assistant
            turn (TRL's prompt/completion path);
            ``"prefix_suffix"`` — no chat template: the prompt is a prefix, the answer a suffix that
            the processor itself labels (PaliGemma, ``processor(..., suffix=)``);
            ``"seq2seq"`` — encoder-decoder: prompt and image go to the encoder, the answer is the
            decoder's labels (Florence-2).
    """

    name: str
    model_types: tuple[str, ...]
    codec: str
    prompt_style: str
    lora_targets: tuple[str, ...]
    vision_lora_targets: tuple[str, ...]
    vision_prefixes: tuple[str, ...]
    projector_prefixes: tuple[str, ...]
    build_tiny: Callable[[Path, TinySpec], Path]
    codec_settings: Callable[[Any], dict[str, Any]] = field(default=lambda processor: {})
    answer_layout: Literal["chat", "prefix_suffix", "seq2seq"] = "chat"
    auto_class: str = "AutoModelForImageTextToText"  # transformers class that loads it
    description: str = ""
