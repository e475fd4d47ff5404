"""Gemma 3 (``Gemma3ForConditionalGeneration``): a chat VLM with no box format of its own.

Gemma 3 has no detection convention, so it answers vlmdet's generic JSON list (the ``json``
codec: ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``, relative 0–1000 of the original image)
to the generic chat prompt. Its chat template (google/gemma-3-*-it) starts with ``<bos>``, writes
turns as ``<start_of_turn>user\\n…<end_of_turn>\\n`` and the assistant as ``model``, and an image as
``<start_of_image>``, which the processor expands to ``\\n\\n<start_of_image>`` +
``<image_soft_token>`` × mm_tokens_per_image + ``<end_of_image>\\n\\n``. The SigLIP tower sees a
fixed-size image (no pan-and-scan here); the projector average-pools its patches to
``mm_tokens_per_image`` tokens. Image tokens attend to each other both ways (``token_type_ids``
from the processor).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor, GemmaTokenizer

from vlmdet.families.base import Family, TinySpec
from vlmdet.families.paligemma import gemma_vocab
from vlmdet.models.tiny import save_tiny

GEMMA3_SPECIAL = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
PATCH_SIZE = 8
IMAGE_SIZE = 64  # (64/8)^2 = 64 patches, pooled 2x2 to 16 image tokens
MM_TOKENS = 16

# google/gemma-3-*-it chat_template, without its system-turn folding branch's comments (same output).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- else -%}{{ raise_exception(\"Invalid content type\") }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)


def build_tokenizer(spec: TinySpec) -> GemmaTokenizer:
    """Gemma's tokenizer (locally trained) with Gemma 3's turn and image tokens after the vocabulary."""
    vocab, merges = gemma_vocab(spec)
    for tok in GEMMA3_SPECIAL:
        vocab[tok] = len(vocab)
    tokenizer = GemmaTokenizer(
        vocab=vocab, merges=merges, model_max_length=8192,
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA3_SPECIAL], special_tokens=True)
    return tokenizer


def build_tiny(out: Path, spec: TinySpec) -> Path:
    tokenizer = build_tokenizer(spec)
    tid = tokenizer.convert_tokens_to_ids
    image_processor = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False,
                                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=MM_TOKENS)
    head_dim = spec.hidden_size // spec.num_heads
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            max_position_embeddings=8192,
            sliding_window=512,
            layer_types=["sliding_attention"] * (spec.num_layers - 1) + ["full_attention"],  # Gemma 3's local/global mix
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": float(spec.rope_theta)},
                             "full_attention": {"rope_type": "default", "rope_theta": float(spec.rope_theta)}},
            bos_token_id=tid("<bos>"),
            eos_token_id=tid("<eos>"),
            pad_token_id=tid("<pad>"),
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_hidden_layers=spec.vision_depth,
            num_attention_heads=spec.vision_heads,
            patch_size=PATCH_SIZE,
            image_size=IMAGE_SIZE,
            vision_use_head=False,
        ),
        mm_tokens_per_image=MM_TOKENS,
        boi_token_index=tid("<start_of_image>"),
        eoi_token_index=tid("<end_of_image>"),
        image_token_index=tid("<image_soft_token>"),
    )
    model = Gemma3ForConditionalGeneration(config)
    # transformers initialises the projector's weight to zeros (a real checkpoint overwrites it); a
    # zero projector passes no image to the language model and no gradient back to the vision tower
    import torch

    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, config.text_config.initializer_range)
    # the -it checkpoints stop at <end_of_turn> (and <eos>)
    save_tiny(model, processor, out, "gemma3", spec, bos_token_id=tid("<bos>"), eos_token_id=[tid("<eos>"), tid("<end_of_turn>")], pad_token_id=tid("<pad>"))
    return out


FAMILY = Family(
    name="gemma3",
    model_types=("gemma3",),
    codec="json",
    prompt_style="chat_json",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    vision_prefixes=("model.vision_tower",),
    projector_prefixes=("model.multi_modal_projector",),
    build_tiny=build_tiny,
    description="Gemma 3 (chat VLM, no box format of its own): JSON bbox_2d, relative 0-1000.",
)
