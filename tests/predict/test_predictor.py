"""The predictor's own bookkeeping: where an answer ends, the same number of generate calls on every
process of a sharded model, a progress bar only when asked for, with its total, and each box's
confidence made the way it was asked (an unknown way refused before any image is generated)."""

from __future__ import annotations

import re

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmdet import distributed
from vlmdet.data.readers import open_dataset
from vlmdet.predict import Predictor
from vlmdet.predict.predictor import Answer, prediction_of
from vlmdet.rows import TaskSettings


def predictor_for(family, tiny_model_dir, synth_dir, **kwargs) -> Predictor:
    path = tiny_model_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    settings = TaskSettings.for_model(family, processor, classes=open_dataset(synth_dir, "val").classes, max_new_tokens=4)
    return Predictor(AutoModelForImageTextToText.from_pretrained(path), processor, settings, **kwargs)


def test_an_answer_ends_at_the_checkpoints_end_of_turn_not_only_the_tokenizers_eos(tiny_model_dir, synth_dir):
    # Gemma 3 ends a turn with <end_of_turn>: an end token of its generation_config.json, not the
    # tokenizer's eos; the answer must stop there (a batch's shorter rows go on after it)
    predictor = predictor_for("gemma3", tiny_model_dir, synth_dir)
    end_of_turn = predictor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn != predictor.tokenizer.eos_token_id and end_of_turn in predictor.model.generation_config.eos_token_id
    words = predictor.tokenizer.encode("car 1 2", add_special_tokens=False)
    assert predictor._answer_ids([*words, end_of_turn, *words]) == (0, words)


def test_an_encoder_decoder_row_of_only_the_decoder_start_is_an_empty_answer(tiny_model_dir, synth_dir):
    predictor = predictor_for("florence2", tiny_model_dir, synth_dir)
    start = predictor.model.generation_config.decoder_start_token_id
    assert predictor._answer_ids([start]) == (1, [])
    bos = predictor.tokenizer.bos_token_id
    words = predictor.tokenizer.encode("car", add_special_tokens=False)
    assert predictor._answer_ids([start, bos, *words]) == (2, words)


@pytest.mark.parametrize("n_samples, batch_size, calls_per_rank", [(6, 3, [1, 1]), (9, 3, [2, 2]), (3, 3, [1, 1]), (0, 3, [0, 0])])
def test_every_process_of_a_sharded_model_makes_the_same_number_of_generate_calls(n_samples, batch_size, calls_per_rank, tiny_model_dir,
                                                                                    synth_dir, monkeypatch):
    # under FSDP every forward is a collective: a process with fewer batches (or none: 1 batch, 2
    # processes) must still call generate as often as the others, or the run hangs; no image at all: no call, no error
    samples = open_dataset(synth_dir, "test").samples + open_dataset(synth_dir, "val").samples
    samples = samples[:n_samples]
    predictor = predictor_for("qwen2_5_vl", tiny_model_dir, synth_dir, batch_size=batch_size)
    monkeypatch.setattr(Predictor, "_sharded", property(lambda self: True))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank, expected in enumerate(calls_per_rank):
        calls = []
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        # every process ends with the predictions of all samples: the other process's part arrives in gather
        monkeypatch.setattr(distributed, "gather", lambda items: [(i, predictor._prediction(samples[i], Answer(""))) for i in range(len(samples))])
        monkeypatch.setattr(predictor, "generate_answers", lambda bs, imgs: calls.append([s.id for s in bs]) or [Answer("") for _ in bs])
        assert len(predictor.predict(samples)) == n_samples
        assert len(calls) == expected, (rank, calls)


def test_a_progress_bar_only_when_asked_with_the_number_of_images(tiny_model_dir, synth_dir, capsys):
    samples = open_dataset(synth_dir, "val").samples[:4]
    predictor = predictor_for("qwen2_5_vl", tiny_model_dir, synth_dir, batch_size=2)
    capsys.readouterr()  # transformers' own "Loading weights" bar
    predictor.predict(samples)
    assert capsys.readouterr().err == ""
    predictor.predict(samples, progress=True, desc="scoring")
    err = capsys.readouterr().err
    # the bar's total is the number of images ("n/4"; tqdm may redraw only its first state, 0/4, before
    # a leave=False bar is cleared, so the count it ends on is not asserted); without a total it reads "0img"
    assert "scoring:" in err and re.search(r"\b[0-4]/4 \[", err), err
    predictor.predict(samples, progress=True)
    assert "predict:" in capsys.readouterr().err  # the bar's own name when the caller gives none


def test_each_box_confidence_is_made_the_way_the_predictor_was_asked(tiny_model_dir, synth_dir):
    from tests.answering import AnsweringModel, key_of_image

    samples = [s for s in open_dataset(synth_dir, "val").samples if len(s.boxes)][:3]
    base = predictor_for("qwen2_5_vl", tiny_model_dir, synth_dir)
    settings = TaskSettings.for_model("qwen2_5_vl", base.processor, classes=open_dataset(synth_dir, "val").classes)
    texts = {key_of_image(base.processor, s.load_image()): settings.target(s) for s in samples}
    # the answer's tokens alternate between probability 0.9 and 0.5: every box spans both kinds
    model = AnsweringModel(base.model, base.processor, texts, token_prob=lambda text, t: 0.9 if t % 2 == 0 else 0.5)

    def confidences(**kwargs):
        preds = Predictor(model, base.processor, settings, **kwargs).predict(samples)
        assert all(len(p.confidences) == len(p.boxes) > 0 for p in preds)
        return [c for p in preds for c in p.confidences]

    default = confidences()
    assert default == confidences(confidence="geometric_mean")  # the default is the geometric mean
    assert all(0.5 < c < 0.9 for c in default), default
    assert confidences(confidence="min") == pytest.approx([0.5] * len(default), abs=1e-4)
    assert all(m >= g - 1e-6 for m, g in zip(confidences(confidence="mean"), default))  # arithmetic >= geometric mean
    assert all(c < g for c, g in zip(confidences(confidence="product"), default))
    # the free function behind it has the same default
    raw = Predictor(model, base.processor, settings).generate_answers(samples, [s.load_image() for s in samples])
    assert [c for s, a in zip(samples, raw) for c in prediction_of(settings, s, a).confidences] == default
    with pytest.raises(ValueError, match=r"unknown confidence 'median': use one of geometric_mean, min, mean, product"):
        Predictor(model, base.processor, settings, confidence="median")
