"""PaliGemma 2: ``detect a ; b`` prefix, ``<loc>`` boxes in the suffix, prefix-LM attention.

Conventions (big_vision's PaliGemma README, transformers' ``PaliGemmaProcessor``):

* no chat template: the model input is ``<image>``*N ``<bos>`` prefix ``\\n``, the answer (suffix)
  follows and ends with ``<eos>``;
* boxes are four ``<locDDDD>`` tokens (1024 bins, **y first**: y1 x1 y2 x2) then the label,
  objects separated by `` ; `` (the ``paligemma`` codec);
* training goes through ``processor(text=prefix, images=..., suffix=target)``, which returns the
  labels (prefix and image tokens -100) and ``token_type_ids`` (0 prefix, 1 suffix). The model
  attends bidirectionally over token type 0 — so a collator that marks the answer as prefix lets
  every answer token see the answer. TRL's prompt/completion path gives completions type 0, so
  vlmdet's collator uses the processor's own suffix path for processors without a chat template.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import GemmaTokenizer, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor

from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny
from vlmdet.models.tokenizer import detection_corpus

# Gemma's first ids: <pad> <eos> <bos> <unk> <mask>; then the 256 byte-fallback tokens.
GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
PATCH_SIZE = 8
IMAGE_SIZE = 64  # the tiny model sees 64x64 images: (64/8)^2 = 64 image tokens (no pooling in PaliGemma)


def _loc_corpus(n: int = 2000, seed: int = 0):
    # PaliGemma targets, so the tiny vocabulary holds " ; " and label merges like the real one.
    import random

    from vlmdet.codecs import get_codec

    rng = random.Random(seed)
    codec = get_codec("paligemma")
    for _ in range(n):
        k = rng.randint(1, 3)
        boxes = [[rng.uniform(0, 50), rng.uniform(0, 50), rng.uniform(50, 100), rng.uniform(50, 100)] for _ in range(k)]
        yield codec.encode(boxes, [rng.choice(["circle", "square", "triangle", "star", "cat", "dog"]) for _ in range(k)], (100, 100))


def build_tokenizer(spec: TinySpec) -> GemmaTokenizer:
    """A ``GemmaTokenizer`` (BPE with byte fallback, ``▁`` for spaces, digits one per token) trained locally."""
    vocab, merges = gemma_vocab(spec)
    return GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=8192)


def gemma_vocab(spec: TinySpec) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma's vocabulary layout, trained locally: its five specials, the 256 byte-fallback tokens,
    then BPE merges (Gemma 2 for PaliGemma, Gemma 3 adds its own specials after these)."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    # Training only: split words and single digits, so no merge ever joins two digits or crosses a
    # word (Gemma's vocabulary has neither); the runtime GemmaTokenizer applies the merges as is.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next"), pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.Split(Regex(r"<loc\d{4}>"), behavior="isolated")]
    )
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, min_frequency=2, show_progress=False, special_tokens=list(GEMMA_SPECIAL))
    tok.train_from_iterator(list(detection_corpus(spec.class_names, seed=spec.seed)), trainer=trainer)
    import json

    model = json.loads(tok.to_str())["model"]
    trained, merges = model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = {t: i for i, t in enumerate(GEMMA_SPECIAL)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t in sorted(trained, key=trained.get):
        if t not in vocab and not t.startswith("<loc"):
            vocab[t] = len(vocab)
    return vocab, merges


def build_tiny(out: Path, spec: TinySpec) -> Path:
    tokenizer = build_tokenizer(spec)
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # adds <image>, the 1024 <locDDDD> and 128 <segDDD> tokens, as for the real checkpoints
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tid = tokenizer.convert_tokens_to_ids
    head_dim = spec.hidden_size // spec.num_heads
    config = PaliGemmaConfig(
        text_config=dict(
            model_type="gemma2",
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
            rope_parameters={"rope_type": "default", "rope_theta": float(spec.rope_theta)},
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
            projection_dim=spec.hidden_size,
            vision_use_head=False,  # as in the real PaliGemma configs: the pooling head is unused
        ),
        image_token_index=processor.image_token_id,
        projection_dim=spec.hidden_size,
        hidden_size=spec.hidden_size,
        vocab_size=len(tokenizer),
    )
    model = PaliGemmaForConditionalGeneration(config)
    save_tiny(model, processor, out, "paligemma", spec, bos_token_id=tid("<bos>"), eos_token_id=[tid("<eos>")], pad_token_id=tid("<pad>"))
    return out


FAMILY = Family(
    name="paligemma",
    model_types=("paligemma",),
    codec="paligemma",
    prompt_style="paligemma",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    vision_prefixes=("model.vision_tower",),
    projector_prefixes=("model.multi_modal_projector",),
    build_tiny=build_tiny,
    answer_layout="prefix_suffix",
    description="PaliGemma 2: 'detect a ; b' prefix, <locDDDD> tokens (1024 bins, y first), prefix-LM labels with token_type_ids.",
)
