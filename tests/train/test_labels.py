"""Completion-only labels: the trained tokens decode to exactly the target text plus its end token."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from vlmdet.data.readers import open_dataset
from vlmdet.families import FAMILIES, get_family
from vlmdet.models.processing import image_feature_token_id
from vlmdet.rows import TaskSettings
from vlmdet.train.collator import DetectionCollator, SequenceTooLongError

# What each family's chat template puts around the answer: (text before the target that belongs
# to the assistant turn, end-of-turn text after it, end of the generation prompt).
TURN = {
    "qwen2_5_vl": ("", "<|im_end|>\n", "<|im_start|>assistant\n"),
    "qwen3_vl": ("", "<|im_end|>\n", "<|im_start|>assistant\n"),
    "smolvlm": (" ", "<end_of_utterance>\n", "Assistant:"),
    "paligemma": ("", "<eos>", "\n"),  # prefix "<image>*N<bos>detect ...\n", suffix target + <eos>
    "qwen2_vl": ("", "<|im_end|>\n", "<|im_start|>assistant\n"),
    "internvl": ("", "<|im_end|>\n", "<|im_start|>assistant\n"),
    "gemma3": ("", "<end_of_turn>\n", "<start_of_turn>model\n"),
}


def test_every_decoder_only_family_has_its_turn_here():
    """A new family's chat template must be written down here (an oracle independent of vlmdet)."""
    assert set(TURN) == {f for f in FAMILIES if get_family(f).answer_layout != "seq2seq"}


@pytest.fixture(scope="module")
def train_split(synth_dir):
    return open_dataset(synth_dir, "train")


@pytest.mark.parametrize("family", list(TURN))
def test_label_span_is_exactly_the_target(family, tiny_model_dir, train_split):
    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    settings = TaskSettings.for_model(family, processor, classes=train_split.classes)
    samples = train_split.samples[:6]
    batch = DetectionCollator(processor, layout=get_family(family).answer_layout)([settings.row(s) | {"id": s.id} for s in samples])
    tok = processor.tokenizer
    image_id = image_feature_token_id(processor)
    lead, end, prompt_end = TURN[family]
    for i, s in enumerate(samples):
        labels, ids, mask = batch["labels"][i], batch["input_ids"][i], batch["attention_mask"][i]
        trained = labels != -100
        assert tok.decode(labels[trained]) == lead + settings.target(s) + end
        assert torch.equal(labels[trained], ids[trained])  # labels are the input ids themselves (shifted in the model)
        assert (ids == image_id).sum() > 0 and not trained[ids == image_id].any(), "no image tokens, or an image token is trained"
        assert not trained[mask == 0].any(), "a pad token is trained"
        # everything before the first trained token is the prompt, and none of it is trained
        first = int(trained.nonzero()[0])
        prompt_text = tok.decode(ids[:first][mask[:first] == 1])
        assert prompt_text.endswith(prompt_end) and settings.prompt(s) in prompt_text
        # the trained span is contiguous: nothing in the middle of the target is masked
        last = int(trained.nonzero()[-1])
        assert trained[first : last + 1].all()


def test_pixel_values_take_the_model_dtype(tiny_model_dir, train_split):
    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=train_split.classes)
    batch = DetectionCollator(processor, dtype=torch.bfloat16)([settings.row(s) for s in train_split.samples[:2]])
    assert batch["pixel_values"].dtype == torch.bfloat16


def test_too_long_is_an_error_naming_the_sample_never_a_truncation(tiny_model_dir, train_split):
    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=train_split.classes)
    rows = [settings.row(s) | {"id": s.source} for s in train_split.samples[:2]]
    with pytest.raises(SequenceTooLongError, match=r"sample .*image id .* tokens > max_length=40.*never truncates"):
        DetectionCollator(processor, max_length=40)(rows)


def test_a_sample_of_exactly_max_length_tokens_fits(tiny_model_dir, train_split):
    """max_length is the longest allowed sequence, as in TRL: a row of exactly that many tokens trains."""
    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=train_split.classes)
    rows = [settings.row(s) | {"id": s.source} for s in train_split.samples[:2]]
    longest = int(DetectionCollator(processor)(rows)["attention_mask"].sum(dim=1).max())
    assert int(DetectionCollator(processor, max_length=longest)(rows)["attention_mask"].sum(dim=1).max()) == longest
    with pytest.raises(SequenceTooLongError, match=rf"needs {longest} tokens > max_length={longest - 1}"):
        DetectionCollator(processor, max_length=longest - 1)(rows)


def test_crowd_regions_are_not_targets(tiny_model_dir, train_split):
    import numpy as np

    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=train_split.classes)
    s = next(x for x in train_split.samples if len(x.boxes) >= 2)
    crowd = s.__class__(**{**s.__dict__, "iscrowd": np.array([True] + [False] * (len(s.boxes) - 1))})
    decoded = settings.decode(settings.target(crowd), crowd)
    assert len(decoded.boxes) == len(s.boxes) - 1


def test_paligemma_suffix_is_token_type_1_and_attends_causally(tiny_model_dir, train_split):
    """PaliGemma attends bidirectionally over token type 0: the answer must be type 1, the prompt 0."""
    processor = AutoProcessor.from_pretrained(tiny_model_dir("paligemma"))
    settings = TaskSettings.for_model("paligemma", processor, classes=train_split.classes)
    batch = DetectionCollator(processor, layout="prefix_suffix")([settings.row(s) for s in train_split.samples[:4]])
    trained = batch["labels"] != -100
    real = batch["attention_mask"] == 1
    assert torch.equal(batch["token_type_ids"].bool() & real, trained)
    # labels=all (completion_only=False): every real token is trained, prompt and image included, padding never
    whole = DetectionCollator(processor, layout="prefix_suffix", completion_only=False)([settings.row(s) for s in train_split.samples[:4]])
    assert torch.equal(whole["labels"], whole["input_ids"].masked_fill(whole["attention_mask"] == 0, -100))
    assert (whole["attention_mask"] == 0).any()  # the rows differ in length: the padding case is checked


def test_florence2_labels_are_the_decoder_target_only(tiny_model_dir, train_split):
    """Encoder-decoder: the prompt and image go to the encoder; labels are <s> target </s>, pads -100."""
    processor = AutoProcessor.from_pretrained(tiny_model_dir("florence2"))
    settings = TaskSettings.for_model("florence2", processor, classes=train_split.classes)
    samples = train_split.samples[:4]
    batch = DetectionCollator(processor, layout="seq2seq")([settings.row(s) for s in samples])
    tok = processor.tokenizer
    for i, s in enumerate(samples):
        labels = batch["labels"][i]
        assert tok.decode(labels[labels != -100]) == "<s>" + settings.target(s) + "</s>"
        assert tok.decode(batch["input_ids"][i][batch["attention_mask"][i] == 1]).endswith("<s>Locate the objects with category name in the image.</s>")
    with pytest.raises(ValueError, match="no meaning for an encoder-decoder"):
        DetectionCollator(processor, layout="seq2seq", completion_only=False)([settings.row(samples[0])])


def test_a_chat_family_without_a_chat_template_is_a_clear_error(tiny_model_dir, train_split):
    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=train_split.classes)
    row = settings.row(train_split.samples[0])
    processor.chat_template = None  # e.g. a base checkpoint shipped without one
    with pytest.raises(ValueError, match="has no chat template, and this family answers in a chat turn"):
        DetectionCollator(processor)([row])
