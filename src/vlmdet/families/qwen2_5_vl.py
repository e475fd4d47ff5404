"""Qwen2.5-VL: JSON ``bbox_2d`` boxes in absolute pixels of the *smart-resized* image.

The resize factor is patch_size * merge_size (14 * 2 = 28) and the min/max pixels are the
processor's, so the codec is built from the processor of the model being trained.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from vlmdet.families._qwen import (
    QWEN2_VL_CHAT_TEMPLATE,
    build_qwen_tokenizer,
    mrope_sections,
    qwen_resize_settings,
    qwen_token_ids,
)
from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny

PATCH_SIZE, MERGE_SIZE = 14, 2


def build_tiny(out: Path, spec: TinySpec) -> Path:
    patch = spec.vision_patch_size or PATCH_SIZE
    tokenizer = build_qwen_tokenizer(spec)
    ids = qwen_token_ids(tokenizer)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, patch_size=patch, merge_size=MERGE_SIZE
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=MERGE_SIZE)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    mrope = mrope_sections(spec)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": float(spec.rope_theta), "mrope_section": mrope},
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=patch,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=2,
            window_size=patch * MERGE_SIZE * 4,
            fullatt_block_indexes=[spec.vision_depth - 1],
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=True,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    save_tiny(
        model,
        processor,
        out,
        "qwen2_5_vl",
        spec,
        bos_token_id=ids["bos_token_id"],
        eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]],
        pad_token_id=ids["pad_token_id"],
    )
    return out


FAMILY = Family(
    name="qwen2_5_vl",
    model_types=("qwen2_5_vl",),
    codec="qwen2_5_vl",
    prompt_style="chat_json",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("qkv", "attn.proj"),
    vision_prefixes=("visual.blocks", "visual.patch_embed"),
    projector_prefixes=("visual.merger",),
    build_tiny=build_tiny,
    codec_settings=qwen_resize_settings,
    description="Qwen2.5-VL: JSON bbox_2d in absolute pixels of the smart-resized image (factor 28).",
)
