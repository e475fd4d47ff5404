"""Decoding on record: greedy whatever the checkpoint's generation_config.json says, any setting
overridable, and box confidences read from the tokens that wrote each box."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

from vlmdet.data.readers import open_dataset
from vlmdet.predict import Predictor
from vlmdet.predict.decoding import Decoding, check_generation, span_confidence, strip_answer, token_char_spans
from vlmdet.rows import TaskSettings

CHECKPOINT_HABITS = {"do_sample": True, "temperature": 0.7, "top_k": 5, "num_beams": 3, "repetition_penalty": 1.8, "no_repeat_ngram_size": 2}


@pytest.fixture(scope="module")
def opinionated_model(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny Qwen2.5-VL whose generation_config.json samples, beams and penalises."""
    path = shutil.copytree(tiny_model_dir("qwen2_5_vl"), tmp_path_factory.mktemp("opinionated") / "m")
    cfg = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**cfg, **CHECKPOINT_HABITS}))
    return path


def bare_greedy(model, inputs: dict, n: int, stop: set[int]) -> list[int]:
    """argmax, token by token, the whole sequence each time: no cache, no generate(), no config."""
    inputs = dict(inputs)
    per_token = [k for k, v in inputs.items() if torch.is_tensor(v) and v.shape == inputs["input_ids"].shape]
    out = []
    for _ in range(n):
        nxt = int(model(**inputs).logits[:, -1].argmax(-1))
        out.append(nxt)
        if nxt in stop:
            break
        grow = {"input_ids": nxt, "attention_mask": 1}  # other per-token inputs (mm_token_type_ids): 0, a text token
        for k in per_token:
            inputs[k] = torch.cat([inputs[k], torch.tensor([[grow.get(k, 0)]], dtype=inputs[k].dtype)], dim=1)
    return out


@torch.no_grad()
def test_greedy_is_greedy_whatever_the_checkpoint_says(opinionated_model, synth_dir):
    model = AutoModelForImageTextToText.from_pretrained(opinionated_model).eval()
    processor = AutoProcessor.from_pretrained(opinionated_model)
    assert model.generation_config.repetition_penalty == 1.8  # the habits are really there
    ds = open_dataset(synth_dir, "val")
    settings = TaskSettings.for_model("qwen2_5_vl", processor, classes=ds.classes, max_new_tokens=24)
    predictor = Predictor(model, processor, settings, batch_size=1)
    sample, image = ds[0], ds[0].load_image()
    inputs = processor(images=[[image]], text=[predictor._prompt_text(sample)], return_tensors="pt")
    stop = predictor._end_ids
    want = bare_greedy(model, dict(inputs), 24, stop)
    want_text = processor.tokenizer.decode([t for t in want if t not in stop], skip_special_tokens=False).strip()
    assert predictor.generate_texts([sample], [image]) == [want_text]
    # what the old call did — do_sample=False, num_beams=1, the rest filled in from the checkpoint — is not greedy
    naive = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=24)[0, inputs["input_ids"].shape[1]:].tolist()
    assert naive[: len(want)] != want
    assert model.generation_config.repetition_penalty == 1.8  # vlmdet set the checkpoint's settings aside, then back


def test_any_generation_setting_can_be_set_and_is_on_record(opinionated_model):
    d = Decoding({"num_beams": 2, "repetition_penalty": 1.1})
    model = AutoModelForImageTextToText.from_pretrained(opinionated_model)
    config = d.config(model, 16)
    assert (config.num_beams, config.repetition_penalty, config.no_repeat_ngram_size, config.do_sample, config.max_new_tokens) == (2, 1.1, 0, False, 16)
    assert config.eos_token_id == model.generation_config.eos_token_id  # the checkpoint's end tokens are kept
    assert d.record()["overrides"] == {"num_beams": 2, "repetition_penalty": 1.1} and not d.greedy
    with pytest.raises(ValueError, match=r"generation\.num_beam: not GenerationConfig fields \(did you mean generation\.num_beams\?\)"):
        check_generation({"num_beam": 2})
    with pytest.raises(ValueError, match=r"generation\.num_beams must be a positive integer, got 0"):
        check_generation({"num_beams": 0})
    with pytest.raises(ValueError, match=r"generation: `max_new_tokens` must be greater than 0"):
        check_generation({"max_new_tokens": -1})


def test_the_generation_section_of_a_config_is_checked_before_anything_loads(tmp_path):
    from vlmdet.config import ConfigError
    from vlmdet.train.config import load_config

    assert load_config(None, ["generation.repetition_penalty=1.1"]).generation == {"repetition_penalty": 1.1}
    with pytest.raises(ConfigError, match="generation.repetiton_penalty"):
        load_config(None, ["generation.repetiton_penalty=1.1"])


def test_token_spans_cover_the_text_exactly(tiny_model_dir):
    tok = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl")).tokenizer
    for text in ['```json\n[\n\t{"bbox_2d": [1, 22, 333, 4444], "label": "circle"}\n]\n```', "é <|box_start|>(1,2),(3,4)<|box_end|> ünïcödé"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        decoded, spans = token_char_spans(tok, ids)
        assert decoded == text and spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_span_confidence_kinds():
    spans = [(0, 2), (2, 4), (4, 6), (6, 8)]
    lps = [math.log(0.9), math.log(0.5), math.log(0.8), math.log(0.1)]
    assert span_confidence((1, 5), spans, lps, "geometric_mean") == pytest.approx((0.9 * 0.5 * 0.8) ** (1 / 3))
    assert span_confidence((1, 5), spans, lps, "min") == pytest.approx(0.5)
    assert span_confidence((1, 5), spans, lps, "mean") == pytest.approx((0.9 + 0.5 + 0.8) / 3)
    assert span_confidence((1, 5), spans, lps, "product") == pytest.approx(0.9 * 0.5 * 0.8)
    assert math.isnan(span_confidence((9, 10), spans, lps))
    # a token that only touches the span (ends where it starts, starts where it ends) did not write it
    assert span_confidence((2, 6), spans, lps, "product") == pytest.approx(0.5 * 0.8)


def test_a_stripped_answer_keeps_each_token_on_its_characters():
    # tokens " ", "[1", "0]", " " of "  [10] "; the leading blanks' token ends up empty at 0
    text, spans = strip_answer("  [10] ", [(0, 2), (2, 4), (4, 6), (6, 7)])
    assert text == "[10]" and spans == [(0, 0), (0, 2), (2, 4), (4, 5)]
    assert [text[s:e] for s, e in spans] == ["", "[1", "0]", ""]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "paligemma", "florence2"])
def test_each_box_gets_the_confidence_of_the_tokens_that_wrote_it(family, answers, tiny_model_dir, synth_dir, tmp_path):
    from vlmdet.cli import main

    model = tiny_model_dir(family)
    ds = open_dataset(synth_dir, "val")
    samples = [s for s in ds if len(s.targets[1]) >= 2]
    settings = TaskSettings.for_model(family, AutoProcessor.from_pretrained(model), classes=ds.classes)
    texts = {settings.target(s): s for s in samples}
    tok = AutoProcessor.from_pretrained(model).tokenizer

    def token_prob(text, t):
        """0.9 for the tokens of the first box, 0.4 after them (the decoded spans say where that is)."""
        first_span = settings.decode(text, texts[text]).spans[0]
        _, spans = token_char_spans(tok, tok(text, add_special_tokens=False)["input_ids"])
        return 0.9 if t >= len(spans) or spans[t][0] < first_span[1] else 0.4

    answers.register(model, samples, settings.target, token_prob=token_prob)
    out = tmp_path / "ev"
    # through the CLI, on exactly the registered images
    ann = json.loads((synth_dir / "val" / "annotations.json").read_text())
    keep = {s.meta["coco_image_id"] for s in samples}
    ann["images"] = [im for im in ann["images"] if im["id"] in keep]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "annotations.json").write_text(json.dumps(ann))
    shutil.copytree(synth_dir / "val" / "images", tmp_path / "val" / "images")
    assert main(["eval", "--model", str(model), "--data", str(tmp_path), "--out", str(out)]) == 0
    for p in json.loads((out / "predictions.json").read_text()):
        conf = p["confidences"]
        assert len(conf) == len(p["boxes"]) >= 2
        assert conf[0] == pytest.approx(0.9, abs=0.02) and all(c < 0.6 for c in conf[1:]), conf
