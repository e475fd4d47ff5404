"""InternVL 3 (transformers-native ``InternVLForConditionalGeneration``): ``<ref>``/``<box>`` grounding.

InternVL answers grounding with its own tags: ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>``,
values relative 0–1000 of the original image (the ``internvl`` codec), and asks with
``Please provide the bounding box coordinate of the region this sentence describes: <ref>…</ref>``
(the ``internvl`` prompt style). The language model is Qwen2.5 (its tokenizer and ChatML turns);
InternVL adds ``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<quad>``, ``</quad>``, ``<ref>``,
``</ref>``, ``<box>``, ``</box>`` as special tokens after Qwen's. The chat template (the ``-hf``
checkpoints') writes an image as ``<IMG_CONTEXT>\\n``; the processor expands it to
``<img>`` + ``<IMG_CONTEXT>`` × image_seq_length + ``</img>``. The vision tower (InternViT) sees
fixed-size tiles; ``pixel shuffle`` (downsample 0.5) then an MLP projector make
(image_size / patch)^2 / 4 tokens per tile.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from vlmdet.families._qwen import QWEN_VL_SPECIAL_TOKENS
from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny
from vlmdet.models.tokenizer import detection_corpus, train_byte_level_bpe

INTERNVL_SPECIAL = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>")
PATCH_SIZE = 8
IMAGE_SIZE = 64  # the tiny model sees 64x64 tiles: (64/8)^2 patches, pixel shuffle 0.5 -> 16 image tokens
DOWNSAMPLE = 0.5

# OpenGVLab/InternVL3-*-hf chat_template: ChatML turns, an image as <IMG_CONTEXT> on its own line.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(spec: TinySpec) -> Qwen2Tokenizer:
    """Qwen2.5's tokenizer (locally trained vocabulary) with Qwen's and InternVL's special tokens, in that order."""
    vocab, merges = train_byte_level_bpe(detection_corpus(spec.class_names, seed=spec.seed), spec.vocab_size)
    specials = QWEN_VL_SPECIAL_TOKENS + INTERNVL_SPECIAL
    base = len(vocab)
    for i, tok in enumerate(specials):
        vocab[tok] = base + i
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=32768,
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    return tokenizer


def build_tiny(out: Path, spec: TinySpec) -> Path:
    tokenizer = build_tokenizer(spec)
    tid = tokenizer.convert_tokens_to_ids
    image_seq_length = int((IMAGE_SIZE // PATCH_SIZE) ** 2 * DOWNSAMPLE**2)
    # InternVL's processor always tiles (crop_to_patches); the tiny model allows one tile, so an
    # image is one 64x64 tile (the real checkpoints: up to 12 tiles of 448 plus a thumbnail)
    image_processor = GotOcr2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_to_patches=True, min_patches=1, max_patches=1,
                                            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    video_processor = InternVLVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                  image_seq_length=image_seq_length, chat_template=INTERNVL_CHAT_TEMPLATE)
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=spec.vision_hidden_size,
            num_hidden_layers=spec.vision_depth,
            num_attention_heads=spec.vision_heads,
            intermediate_size=spec.vision_intermediate_size,
            image_size=[IMAGE_SIZE, IMAGE_SIZE],
            patch_size=[PATCH_SIZE, PATCH_SIZE],
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": float(spec.rope_theta)},
            bos_token_id=tid("<|endoftext|>"),
            eos_token_id=tid("<|im_end|>"),
            pad_token_id=tid("<|endoftext|>"),
            tie_word_embeddings=True,
        ),
        image_token_id=tid("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=DOWNSAMPLE,
        tie_word_embeddings=True,
    )
    model = InternVLForConditionalGeneration(config)
    save_tiny(model, processor, out, "internvl", spec, bos_token_id=tid("<|endoftext|>"),
              eos_token_id=[tid("<|im_end|>"), tid("<|endoftext|>")], pad_token_id=tid("<|endoftext|>"))
    return out


FAMILY = Family(
    name="internvl",
    model_types=("internvl",),
    codec="internvl",
    prompt_style="internvl",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.projection_layer"),
    vision_prefixes=("vision_tower",),
    projector_prefixes=("multi_modal_projector",),
    build_tiny=build_tiny,
    description="InternVL 3: <ref>label</ref><box>[[x1, y1, x2, y2]]</box>, relative 0-1000.",
)
