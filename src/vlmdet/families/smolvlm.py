"""SmolVLM / Idefics3: a generic chat VLM answering JSON boxes in relative 0–1000 coordinates.

SmolVLM has no detection convention of its own, so it gets vlmdet's generic one (the ``json``
codec: ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`` on 0–1000 of the original image). The
processor squashes every image to ``max_image_size`` (no splitting here), which does not enter
relative coordinates. Chat turns look like ``User:<image>...<end_of_utterance>\\nAssistant: ...``;
the trained span is ``" " + target + "<end_of_utterance>\\n"`` (the template's space after
``Assistant:`` belongs to the answer).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from transformers import GPT2Tokenizer, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor, SmolVLMProcessor
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny
from vlmdet.models.tokenizer import detection_corpus, train_byte_level_bpe

# SmolLM2's own special tokens come first (ids 0..2), the Idefics3/SmolVLM image tokens are added
# after the vocabulary, as in HuggingFaceTB/SmolVLM-*-Instruct.
BASE_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
IMAGE_SPECIAL = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>") + tuple(
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
)
PATCH_SIZE, SCALE_FACTOR = 8, 2
IMAGE_SIZE = 64  # the tiny model sees 64x64 images: (64/8)^2 / 2^2 = 16 image tokens


def build_tokenizer(spec: TinySpec) -> GPT2Tokenizer:
    """SmolLM2-style byte-level BPE (digits one per token) trained locally, with SmolVLM's specials."""
    vocab, merges = train_byte_level_bpe(detection_corpus(spec.class_names, seed=spec.seed), spec.vocab_size)
    shifted = {tok: i + len(BASE_SPECIAL) for tok, i in vocab.items()}
    shifted.update({tok: i for i, tok in enumerate(BASE_SPECIAL)})
    tokenizer = GPT2Tokenizer(
        vocab=shifted,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        model_max_length=8192,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in BASE_SPECIAL + IMAGE_SPECIAL], special_tokens=True)
    return tokenizer


def build_tiny(out: Path, spec: TinySpec) -> Path:
    tokenizer = build_tokenizer(spec)
    tid = tokenizer.convert_tokens_to_ids
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    video_processor = SmolVLMVideoProcessor(size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE})
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=image_seq_len,
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )
    config = SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": float(spec.rope_theta)},
            bos_token_id=tid("<|im_start|>"),
            eos_token_id=tid("<end_of_utterance>"),
            pad_token_id=tid("<|im_end|>"),
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size,
            num_hidden_layers=spec.vision_depth,
            num_attention_heads=spec.vision_heads,
            patch_size=PATCH_SIZE,
            image_size=IMAGE_SIZE,
        ),
        scale_factor=SCALE_FACTOR,
        image_token_id=tid("<image>"),
        tie_word_embeddings=True,
    )
    model = SmolVLMForConditionalGeneration(config)
    save_tiny(
        model,
        processor,
        out,
        "smolvlm",
        spec,
        bos_token_id=tid("<|im_start|>"),
        eos_token_id=[tid("<end_of_utterance>")],
        pad_token_id=tid("<|im_end|>"),
    )
    return out


FAMILY = Family(
    name="smolvlm",
    model_types=("smolvlm", "idefics3"),
    codec="json",
    prompt_style="chat_json",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    vision_prefixes=("model.vision_model",),
    projector_prefixes=("model.connector",),
    build_tiny=build_tiny,
    description="SmolVLM / Idefics3 (generic chat VLM): JSON bbox_2d, relative 0-1000.",
)
