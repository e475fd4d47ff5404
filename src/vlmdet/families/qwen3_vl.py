"""Qwen3-VL: the same JSON ``bbox_2d`` as Qwen2.5-VL, but coordinates relative on 0–1000.

Images are still smart-resized (factor 32 = patch 16 * merge 2) but that does not enter the
coordinates, so the codec needs no processor settings.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from vlmdet.families._qwen import QWEN3_VL_CHAT_TEMPLATE, build_qwen_tokenizer, qwen_token_ids
from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny

PATCH_SIZE, MERGE_SIZE = 16, 2


def build_tiny(out: Path, spec: TinySpec) -> Path:
    patch = spec.vision_patch_size or PATCH_SIZE
    tokenizer = build_qwen_tokenizer(spec)
    ids = qwen_token_ids(tokenizer)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        patch_size=patch,
        merge_size=MERGE_SIZE,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(patch_size=patch, merge_size=MERGE_SIZE)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    head_dim = spec.hidden_size // spec.num_heads
    # Interleaved M-RoPE: sections (t, h, w) over head_dim / 2 frequencies, h and w each taking
    # every third slot; the real models use [24, 20, 20] for head_dim 128.
    half = head_dim // 2
    hw = (half * 5) // 16
    mrope = list(spec.mrope_section) if spec.mrope_section else [half - 2 * hw, hw, hw]
    if sum(mrope) != half or 3 * mrope[1] > half:
        raise ValueError(f"mrope_section {mrope} must sum to head_dim / 2 = {half}, with 3 * h <= {half}")
    depth = spec.vision_depth
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            head_dim=head_dim,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": float(spec.rope_theta),
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=patch,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=2,
            num_position_embeddings=16 * 16,
            deepstack_visual_indexes=list(range(max(0, depth - 2), depth - 1)) or [0],
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=True,
    )
    model = Qwen3VLForConditionalGeneration(config)
    save_tiny(
        model,
        processor,
        out,
        "qwen3_vl",
        spec,
        bos_token_id=ids["bos_token_id"],
        eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]],
        pad_token_id=ids["pad_token_id"],
    )
    return out


FAMILY = Family(
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    codec="qwen3_vl",
    prompt_style="chat_json",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("attn.qkv", "attn.proj"),
    vision_prefixes=("visual.blocks", "visual.patch_embed", "visual.pos_embed"),
    projector_prefixes=("visual.merger", "visual.deepstack_merger_list"),
    build_tiny=build_tiny,
    description="Qwen3-VL: JSON bbox_2d, coordinates relative on 0-1000.",
)
