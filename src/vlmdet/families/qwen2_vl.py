"""Qwen2-VL: its own box tokens, relative coordinates in [0, 1000).

Qwen2-VL grounds with special tokens (model card, paper sec. 2.2): the reference between
``<|object_ref_start|>`` and ``<|object_ref_end|>``, the box as two corner points between
``<|box_start|>`` and ``<|box_end|>``, each value ``round(v / size * 1000)`` of the *original* image
(the ``qwen2_vl`` codec). Same chat template, special tokens and image processor as Qwen2.5-VL
(patch 14, merge 2), with the Qwen2-VL vision tower (no window attention, LayerNorm MLP merger).
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

from vlmdet.families._qwen import QWEN2_VL_CHAT_TEMPLATE, build_qwen_tokenizer, mrope_sections, qwen_token_ids
from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny

PATCH_SIZE, MERGE_SIZE = 14, 2


def build_tiny(out: Path, spec: TinySpec) -> Path:
    patch = spec.vision_patch_size or PATCH_SIZE
    tokenizer = build_qwen_tokenizer(spec)
    ids = qwen_token_ids(tokenizer)
    image_processor = Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, patch_size=patch, merge_size=MERGE_SIZE)
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=MERGE_SIZE)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": float(spec.rope_theta), "mrope_section": mrope_sections(spec)},
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            embed_dim=spec.vision_hidden_size,
            hidden_size=spec.hidden_size,  # the merger's output: the language model's width
            mlp_ratio=max(1, spec.vision_intermediate_size // spec.vision_hidden_size),
            num_heads=spec.vision_heads,
            patch_size=patch,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=2,
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=True,
    )
    model = Qwen2VLForConditionalGeneration(config)
    save_tiny(model, processor, out, "qwen2_vl", spec, bos_token_id=ids["bos_token_id"],
              eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]], pad_token_id=ids["pad_token_id"])
    return out


FAMILY = Family(
    name="qwen2_vl",
    model_types=("qwen2_vl",),
    codec="qwen2_vl",
    prompt_style="qwen2_vl",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("qkv", "attn.proj"),
    vision_prefixes=("visual.blocks", "visual.patch_embed"),
    projector_prefixes=("visual.merger",),
    build_tiny=build_tiny,
    description="Qwen2-VL: <|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>, relative [0, 1000).",
)
