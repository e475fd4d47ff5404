from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from vlmdet.families import get_family
from vlmdet.models.tiny import TINY_INFO_FILE

FAMILIES = {  # model class, processor class, tokenizer class after a save/load round trip
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2Tokenizer"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen2Tokenizer"),
    # SmolVLM ships a GPT2Tokenizer config; transformers 5 loads it as its generic fast backend
    "smolvlm": ("SmolVLMForConditionalGeneration", "SmolVLMProcessor", "TokenizersBackend"),
    "paligemma": ("PaliGemmaForConditionalGeneration", "PaliGemmaProcessor", "GemmaTokenizer"),
    # Florence-2 ships a BART tokenizer config; transformers 5 loads it with its Roberta class
    "florence2": ("Florence2ForConditionalGeneration", "Florence2Processor", "RobertaTokenizer"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2Tokenizer"),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor", "Qwen2Tokenizer"),
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor", "GemmaTokenizer"),
}
QWEN = ["qwen2_5_vl", "qwen3_vl", "qwen2_vl"]


def test_every_registered_family_is_listed_here():
    from vlmdet.families import FAMILIES as REGISTERED

    assert set(FAMILIES) == set(REGISTERED)


def _chat(processor, text: str, images: list[Image.Image]):
    if type(processor).__name__ == "Florence2Processor":  # encoder input; the processor adds <image> and <s>..</s>
        return processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
    if processor.chat_template is None:  # PaliGemma: the prompt is a plain prefix
        return processor(images=[[im] for im in images], text=[processor.image_token + text] * len(images), return_tensors="pt", padding=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[[im] for im in images], text=[prompt] * len(images), return_tensors="pt", padding=True)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loads_offline_with_real_classes(family, tiny_model_dir):
    path = tiny_model_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == FAMILIES[family][0]
    assert type(processor).__name__ == FAMILIES[family][1]
    assert type(processor.tokenizer).__name__ == FAMILIES[family][2]
    if family not in ("paligemma", "florence2", "gemma3"):
        assert processor.video_processor is not None  # these processors need torchvision's video processor
    info = json.loads((path / TINY_INFO_FILE).read_text())
    assert info["family"] == family and info["parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", QWEN)
def test_special_token_ids_and_patch_sizes_agree(family, tiny_model_dir):
    path = tiny_model_dir(family)
    config = AutoConfig.from_pretrained(path)
    tok = AutoProcessor.from_pretrained(path).tokenizer
    ip = AutoProcessor.from_pretrained(path).image_processor
    tid = tok.convert_tokens_to_ids
    assert config.image_token_id == tid("<|image_pad|>")
    assert config.video_token_id == tid("<|video_pad|>")
    assert config.vision_start_token_id == tid("<|vision_start|>")
    assert config.vision_end_token_id == tid("<|vision_end|>")
    assert config.text_config.eos_token_id == tok.eos_token_id == tid("<|im_end|>")
    assert config.text_config.pad_token_id == tok.pad_token_id == tid("<|endoftext|>")
    assert config.text_config.bos_token_id == tid("<|endoftext|>")
    assert config.text_config.vocab_size == len(tok)
    assert ip.patch_size == config.vision_config.patch_size
    assert ip.merge_size == config.vision_config.spatial_merge_size
    assert ip.temporal_patch_size == config.vision_config.temporal_patch_size
    # every special token is one token, never split
    for t in ["<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|vision_start|>"]:
        assert tok.tokenize(t) == [t]


def test_smolvlm_special_tokens_and_image_sizes_agree(tiny_model_dir):
    path = tiny_model_dir("smolvlm")
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok, ip = processor.tokenizer, processor.image_processor
    tid = tok.convert_tokens_to_ids
    assert config.image_token_id == processor.image_token_id == tid("<image>")
    assert config.text_config.eos_token_id == tok.eos_token_id == tid("<end_of_utterance>")
    assert config.text_config.pad_token_id == tok.pad_token_id
    assert config.text_config.vocab_size == len(tok)
    side = ip.max_image_size["longest_edge"]
    assert side == config.vision_config.image_size
    assert processor.image_seq_len == (side // config.vision_config.patch_size) ** 2 // config.scale_factor**2
    for t in ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<row_1_col_1>"]:
        assert tok.tokenize(t) == [t]


def test_paligemma_loc_tokens_and_image_sizes_agree(tiny_model_dir):
    path = tiny_model_dir("paligemma")
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    assert config.image_token_id == processor.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert config.text_config.vocab_size == len(tok) and config.text_config.eos_token_id == tok.eos_token_id
    assert processor.image_seq_length == (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    assert config.vision_config.vision_use_head is False
    for t in ["<loc0000>", "<loc1023>", "<seg127>", "<image>", "<bos>", "<eos>"]:
        assert tok.tokenize(t) == [t]
    assert tok.tokenize("<loc0012><loc1023> circle ; <loc0001>")[:3] == ["<loc0012>", "<loc1023>", "▁circle"]


def test_florence2_loc_tokens_and_image_sizes_agree(tiny_model_dir):
    path = tiny_model_dir("florence2")
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    assert config.is_encoder_decoder and config.image_token_id == processor.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert config.text_config.vocab_size == len(tok)
    assert config.text_config.decoder_start_token_id == tok.eos_token_id  # BART: decoding starts from </s>
    for t in ["<loc_0>", "<loc_999>", "<od>", "<image>"]:
        assert tok.tokenize(t) == [t]
    x = processor(images=[Image.new("RGB", (90, 70))], text=["<OD>"], return_tensors="pt")
    # the task token becomes Florence-2's task sentence, framed by <s> ... </s> after the image tokens
    assert tok.decode(x["input_ids"][0][processor.num_image_tokens :]) == "<s>Locate the objects with category name in the image.</s>"


def test_internvl_special_tokens_and_image_sizes_agree(tiny_model_dir):
    path = tiny_model_dir("internvl")
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    tid = tok.convert_tokens_to_ids
    assert config.image_token_id == processor.image_token_id == tid("<IMG_CONTEXT>")
    assert processor.start_image_token == "<img>" and processor.end_image_token == "</img>"
    assert config.text_config.eos_token_id == tok.eos_token_id == tid("<|im_end|>") and config.text_config.vocab_size == len(tok)
    side, patch = config.vision_config.image_size[0], config.vision_config.patch_size[0]
    assert processor.image_seq_length == config.image_seq_length == int((side // patch) ** 2 * config.downsample_ratio**2)
    # InternVL's own specials come after Qwen's, each one token
    assert tid("<img>") > tid("<|video_pad|>") and tid("</box>") > tid("<ref>")
    for t in ["<img>", "</img>", "<IMG_CONTEXT>", "<ref>", "</ref>", "<box>", "</box>", "<|im_start|>"]:
        assert tok.tokenize(t) == [t]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == "<|im_start|>user\n<IMG_CONTEXT>\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_gemma3_special_tokens_and_image_sizes_agree(tiny_model_dir):
    path = tiny_model_dir("gemma3")
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    tid = tok.convert_tokens_to_ids
    assert config.image_token_id == tid("<image_soft_token>") and config.boi_token_index == tid("<start_of_image>") == processor.image_token_id
    assert config.eoi_token_index == tid("<end_of_image>") and config.text_config.vocab_size == len(tok)
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    assert processor.image_seq_length == config.mm_tokens_per_image and patches % config.mm_tokens_per_image == 0
    for t in ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<image_soft_token>", "<bos>", "<eos>"]:
        assert tok.tokenize(t) == [t]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == "<bos><start_of_turn>user\n<start_of_image>hi<end_of_turn>\n<start_of_turn>model\n"
    gen = json.loads((path / "generation_config.json").read_text())
    assert tid("<end_of_turn>") in gen["eos_token_id"]  # the -it checkpoints stop at the end of the turn


@pytest.mark.parametrize("family", list(FAMILIES))
def test_digits_tokenize_one_by_one(family, tiny_model_dir):
    tok = AutoProcessor.from_pretrained(tiny_model_dir(family)).tokenizer
    pieces = tok.tokenize('{"bbox_2d": [12, 345, 6, 7890]}')
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces and all(len(p) == 1 for p in digit_pieces), pieces
    text = '[{"bbox_2d": [12, 345, 6, 7890], "label": "circle"}]'
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_backward_and_generate(family, tiny_model_dir):
    path = tiny_model_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    images = [Image.new("RGB", (112 + 8 * i, 100), (200, 40 * i, 30)) for i in range(8)]
    batch = _chat(processor, "Detect the circle.", images)
    n_image_tokens = int((batch["input_ids"] == model.config.image_token_id).sum())
    if "image_grid_thw" in batch:  # Qwen: one token per merged patch of the resized image
        assert n_image_tokens == int(batch["image_grid_thw"].prod(-1).sum()) // processor.image_processor.merge_size**2
    else:  # Idefics3 / SmolVLM (no splitting), PaliGemma, Florence-2: a fixed number per image
        per_image = getattr(processor, "image_seq_len", None) or getattr(processor, "num_image_tokens", None) or processor.image_seq_length
        assert n_image_tokens == len(images) * per_image
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    vision = get_family(family).vision_prefixes
    vision_grads = [p.grad for n, p in model.named_parameters() if any(v in n for v in vision)]
    assert vision_grads
    assert any(float(g.abs().sum()) > 0 for g in vision_grads), "no gradient reached the vision tower"

    model.eval()
    one = _chat(processor, "Detect the circle.", images[:1])
    out = model.generate(**one, max_new_tokens=6, do_sample=False)
    if model.config.is_encoder_decoder:  # decoder tokens only, from the decoder start token
        assert out.shape[0] == 1 and 1 < out.shape[1] <= 7 and int(out[0, 0]) == model.generation_config.decoder_start_token_id
    else:
        assert out.shape[0] == 1 and out.shape[1] > one["input_ids"].shape[1]


@pytest.mark.parametrize("family", QWEN)
def test_a_smaller_vision_patch_reaches_the_processor_the_model_and_the_codec(family, tmp_path):
    """tiny.vision_patch_size=7: four times the patches of an image at the same pixel budget, one
    patch size in the processor, the vision config and the codec's resize factor (Qwen2.5-VL writes
    pixels of the image resized to a multiple of it)."""
    from vlmdet.families import TinySpec
    from vlmdet.models.tiny import build_tiny_model
    from vlmdet.rows import TaskSettings

    default, small = (build_tiny_model(family, tmp_path / str(p), TinySpec(vision_patch_size=p)) for p in (None, 7))
    base = get_family(family).build_tiny.__module__
    own = __import__(base, fromlist=["PATCH_SIZE"]).PATCH_SIZE
    assert AutoConfig.from_pretrained(default).vision_config.patch_size == own
    config, processor = AutoConfig.from_pretrained(small), AutoProcessor.from_pretrained(small)
    assert config.vision_config.patch_size == processor.image_processor.patch_size == processor.video_processor.patch_size == 7
    if family == "qwen2_5_vl":
        assert config.vision_config.window_size == 7 * 2 * 4
    assert TaskSettings.for_model(family, processor).codec_settings.get("factor", 14) == 14
    image = Image.new("RGB", (84, 84), (200, 40, 40))
    grids = [AutoProcessor.from_pretrained(p).image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0] for p in (default, small)]
    assert [int(g.prod()) for g in grids] == [36, 144]  # 6x6 patches of 14 (Qwen3-VL: 96 px in patches of 16), 12x12 of 7
    model = AutoModelForImageTextToText.from_pretrained(small)
    with torch.no_grad():  # the image tokens the processor writes match the features the tower makes
        model(**_chat(processor, "Detect.", [image]))


def test_the_vision_patch_size_of_a_family_that_fixes_it_is_refused(tmp_path):
    from vlmdet.families import TinySpec
    from vlmdet.models.tiny import build_tiny_model

    with pytest.raises(ValueError, match="vision_patch_size is read by the qwen2_vl, qwen2_5_vl, qwen3_vl tiny models only, not paligemma's"):
        build_tiny_model("paligemma", tmp_path, TinySpec(vision_patch_size=7))
    assert not any(tmp_path.iterdir())
