"""Pieces shared by the Qwen families: their special tokens, chat templates and tiny tokenizer."""

from __future__ import annotations

from tokenizers import AddedToken
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from vlmdet.families.base import TinySpec
from vlmdet.models.tokenizer import detection_corpus, train_byte_level_bpe

# Special tokens in the order of the real Qwen2-VL / Qwen2.5-VL / Qwen3-VL tokenizers (ids follow
# the ordinary vocabulary there too: <|endoftext|> first, then the chat and vision markers).
QWEN_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template shipped with Qwen2-VL-*-Instruct and Qwen2.5-VL-*-Instruct (chat_template.json):
# a default system turn, each image as <|vision_start|><|image_pad|><|vision_end|>.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-*-Instruct's template, without its tool-calling and reasoning branches (vlmdet uses
# neither): no default system turn, images as in Qwen2.5-VL, assistant turns closed by <|im_end|>.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def build_qwen_tokenizer(spec: TinySpec) -> Qwen2Tokenizer:
    """A ``Qwen2Tokenizer`` with a locally trained vocabulary and the real Qwen-VL special tokens.

    Like the Instruct checkpoints: eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, digits split
    one per token by the Qwen pre-tokenizer regex.
    """
    vocab, merges = train_byte_level_bpe(detection_corpus(spec.class_names, seed=spec.seed), spec.vocab_size)
    base = len(vocab)
    for i, tok in enumerate(QWEN_VL_SPECIAL_TOKENS):
        vocab[tok] = base + i
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    # Register them as special *added* tokens so they are never split; their ids stay those above.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_VL_SPECIAL_TOKENS], special_tokens=True)
    return tokenizer


def mrope_sections(spec: TinySpec) -> list[int]:
    """M-RoPE's (temporal, height, width) split of the head_dim / 2 rotary frequencies, which must add
    up exactly; the real 7B models use [16, 24, 24] for head_dim 128 — the same 1:1.5:1.5 shape."""
    half = spec.hidden_size // spec.num_heads // 2
    mrope = list(spec.mrope_section) if spec.mrope_section else [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    if sum(mrope) != half:
        raise ValueError(f"mrope_section {mrope} must sum to head_dim / 2 = {half}")
    return mrope


def qwen_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """The config fields that name special-token ids, read from ``tokenizer`` (so they always agree)."""
    tid = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": tid("<|endoftext|>"),
    }


def qwen_resize_settings(processor) -> dict:
    """The resize rules of a Qwen-VL image processor: factor = patch * merge, min/max pixels."""
    ip = processor.image_processor
    size = ip.size
    get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {
        "factor": int(ip.patch_size * ip.merge_size),
        "min_pixels": int(get("shortest_edge") or getattr(ip, "min_pixels", 56 * 56)),
        "max_pixels": int(get("longest_edge") or getattr(ip, "max_pixels", 28 * 28 * 1280)),
    }
