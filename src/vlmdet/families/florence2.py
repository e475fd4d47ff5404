"""Florence-2: an encoder-decoder (DaViT vision + BART) with ``<loc_D>`` boxes, ``<OD>`` task.

Conventions (transformers' native ``Florence2Processor`` and the released checkpoints):

* encoder input: ``<image>``*N ``<s>`` task sentence ``</s>``; the processor expands a task token
  (``<OD>`` -> "Locate the objects with category name in the image.");
* the decoder writes ``label<loc_x1><loc_y1><loc_x2><loc_y2>...`` (1000 bins, floor, x first) between
  ``<s>`` and ``</s>``; generation starts from the decoder start token ``</s>``;
* training: ``labels`` = tokenizer(target) (``<s>`` target ``</s>``, pads -100); the model shifts
  them right into decoder inputs. Nothing of the prompt can be trained: it is the encoder's.
  vlmdet trains it with a ``transformers.Trainer`` (``answer_layout="seq2seq"``), not TRL's
  causal prompt/completion path.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from transformers import BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

from vlmdet.families.base import Family, TinySpec
from vlmdet.models.tiny import save_tiny
from vlmdet.models.tokenizer import detection_corpus, train_byte_level_bpe

BART_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3 as in BART / Florence-2
IMAGE_SIZE = 64  # DaViT stride 4*2 -> 8x8 = 64 image tokens for the tiny model
# Florence-2's added vocabulary: task markers, <loc_0>..<loc_999>, region/polygon tokens.
TASK_TOKENS = ("<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<poly>", "</poly>", "<sep>")


def build_tokenizer(spec: TinySpec) -> BartTokenizer:
    vocab, merges = train_byte_level_bpe(detection_corpus(spec.class_names, seed=spec.seed), spec.vocab_size)
    shifted = {t: i for i, t in enumerate(BART_SPECIAL)}
    for t in sorted(vocab, key=vocab.get):
        if t not in shifted:
            shifted[t] = len(shifted)
    shifted["<mask>"] = len(shifted)
    tokenizer = BartTokenizer(vocab=shifted, merges=merges, model_max_length=1024, extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<image>",)], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in TASK_TOKENS + tuple(f"<loc_{i}>" for i in range(1000))])
    return tokenizer


def build_tiny(out: Path, spec: TinySpec) -> Path:
    tokenizer = build_tokenizer(spec)
    tid = tokenizer.convert_tokens_to_ids
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    stride = 8
    image_processor.image_seq_length = (IMAGE_SIZE // stride) ** 2 + 1  # + the pooled global token
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    d = spec.hidden_size
    config = Florence2Config(
        text_config=dict(
            model_type="bart",
            vocab_size=len(tokenizer),
            d_model=d,
            encoder_layers=spec.num_layers,
            decoder_layers=spec.num_layers,
            encoder_attention_heads=spec.num_heads,
            decoder_attention_heads=spec.num_heads,
            encoder_ffn_dim=spec.intermediate_size,
            decoder_ffn_dim=spec.intermediate_size,
            max_position_embeddings=1024,
            bos_token_id=tid("<s>"),
            eos_token_id=tid("</s>"),
            pad_token_id=tid("<pad>"),
            decoder_start_token_id=tid("</s>"),
            forced_eos_token_id=tid("</s>"),
            dropout=0.0,
            attention_dropout=0.0,
        ),
        vision_config=dict(
            depths=[1, 1],
            patch_size=[7, 3],
            patch_stride=[4, 2],
            patch_padding=[3, 1],
            patch_prenorm=[False, True],
            embed_dim=[spec.vision_hidden_size // 2, spec.vision_hidden_size],
            num_heads=[max(1, spec.vision_heads // 2), spec.vision_heads],
            num_groups=[max(1, spec.vision_heads // 2), spec.vision_heads],
            window_size=4,
            drop_path_rate=0.0,
            projection_dim=d,
        ),
        image_token_id=tid("<image>"),
    )
    model = Florence2ForConditionalGeneration(config)
    save_tiny(model, processor, out, "florence2", spec, bos_token_id=tid("<s>"), eos_token_id=[tid("</s>")], pad_token_id=tid("<pad>"),
              decoder_start_token_id=tid("</s>"))
    return out


FAMILY = Family(
    name="florence2",
    model_types=("florence2",),
    codec="florence2",
    prompt_style="florence2",
    lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    vision_lora_targets=("qkv", "proj"),
    vision_prefixes=("model.vision_tower",),
    projector_prefixes=("model.multi_modal_projector",),
    build_tiny=build_tiny,
    answer_layout="seq2seq",
    description="Florence-2 (encoder-decoder): <OD> task, label<loc_x1><loc_y1><loc_x2><loc_y2>, 1000 bins.",
)
