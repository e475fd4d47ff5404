"""The recipe's wiring, checked inside real runs: the batches `vlmdet train` builds, the optimizer
it builds, the gradient alarm, the order targets are written in, the image-token check, the
"before" metrics reused on resume, and the verdict when training did not help."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, TrainerCallback

from tests.conftest import FAST_TRAIN
from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.families import get_family
from vlmdet.predict import predictor as predictor_module
from vlmdet.rows import TaskSettings, canonical_order
from vlmdet.train.collator import SequenceTooLongError
from vlmdet.train.config import load_config
from vlmdet.train.model import param_group
from vlmdet.train.recipe import train


class Grab(TrainerCallback):
    """Keeps what the Trainer hands callbacks at the start: the optimizer and a batch of its dataloader."""

    def on_train_begin(self, args, state, control, optimizer=None, train_dataloader=None, model=None, **kwargs):
        self.optimizer, self.model = optimizer, model
        self.batch = next(iter(train_dataloader))


def _cfg(tmp_path, model, data, *extra):
    return load_config(None, [f"model={model}", f"data={data}", f"output_dir={tmp_path}", "max_steps=1", "save_strategy=no",
                              *FAST_TRAIN, "eval.before=false", "eval.after=false", "eval_steps=1000", *extra])


@pytest.mark.parametrize("labels", ["completion", "all"])
def test_the_batches_vlmdet_train_builds_train_only_the_answer(labels, tiny_model_dir, synth_dir, tmp_path):
    grab = Grab()
    train(_cfg(tmp_path, tiny_model_dir("qwen2_5_vl"), synth_dir, f"labels={labels}"), extra_callbacks=[grab])
    tok = AutoProcessor.from_pretrained(tmp_path).tokenizer
    settings = TaskSettings.load(tmp_path)
    targets = {settings.target(s) + "<|im_end|>\n" for s in open_dataset(synth_dir, "train")}
    batch = grab.batch
    trained = batch["labels"] != -100
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    decoded = [tok.decode(batch["labels"][i][trained[i]]) for i in range(len(trained))]
    ok = all(text in targets for text in decoded) and not trained[batch["input_ids"] == image_id].any()
    assert ok == (labels == "completion"), decoded[0][:200]


def test_per_group_learning_rates_reach_the_optimizer(tiny_model_dir, synth_dir, tmp_path):
    grab = Grab()
    lrs = {"vision": 1e-5, "projector": 3e-4, "language": 1e-3}
    train(_cfg(tmp_path, tiny_model_dir("qwen2_5_vl"), synth_dir, "finetune=full", "warmup_steps=0", "lr_scheduler_type=constant",
               *(f"lr_{g}={v}" for g, v in lrs.items())), extra_callbacks=[grab])
    family = get_family("qwen2_5_vl")
    names = {id(p): n for n, p in grab.model.named_parameters()}
    seen = set()
    for group in grab.optimizer.param_groups:
        assert group["initial_lr"] == lrs[group["name"]] if "initial_lr" in group else group["lr"] == lrs[group["name"]]
        for p in group["params"]:
            assert param_group(names[id(p)], family) == group["name"]
            seen.add(id(p))
    assert seen == {id(p) for p in grab.model.parameters() if p.requires_grad}


def test_the_sft_max_length_reaches_the_collator_a_too_long_sample_stops_the_run(tiny_model_dir, synth_dir, tmp_path):
    """`max_length` is the limit the batches are built under (an SFTConfig field vlmdet's collator
    enforces itself): a run whose answers do not fit stops, naming the sample, before step 1."""
    with pytest.raises(SequenceTooLongError, match=r"sample .* tokens > max_length=30.*never truncates"):
        train(_cfg(tmp_path, tiny_model_dir("qwen2_5_vl"), synth_dir, "max_length=30"))


def test_before_and_after_are_scored_with_the_chosen_confidence(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    """eval.confidence decides the boxes' scores (the ranked mAP) before and after training, not
    only the label in report.json."""
    made = []

    class Recording(predictor_module.Predictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.confidence)

    monkeypatch.setattr("vlmdet.predict.Predictor", Recording)  # the recipe imports it from here when it runs
    cfg = _cfg(tmp_path, tiny_model_dir("qwen2_5_vl"), synth_dir, "eval.before=true", "eval.after=true", "eval.max_samples=2",
               "eval.confidence=min")
    train(cfg)
    assert len(made) >= 2 and set(made) == {"min"}  # before, after (and the in-training scorer): none with the default
    assert json.loads((tmp_path / "report.json").read_text())["confidence"] == "min"


def test_the_gradient_alarm_fires_inside_a_real_run_and_stops_it(tiny_model_dir, synth_dir, tmp_path, monkeypatch, capsys):
    """LoRA on both towers under reentrant checkpointing, with the input-grad hook only on the text
    side (what transformers < 5 did, and vlmdet's own vision hook removed): the vision adapters get
    no gradient while the language adapters learn — the alarm must see it."""
    from vlmdet.train import model as model_mod
    from transformers import PreTrainedModel

    def text_side_only(self):
        self.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))

    monkeypatch.setattr(model_mod, "enable_input_grads", lambda model, family: None)
    monkeypatch.setattr(PreTrainedModel, "enable_input_require_grads", text_side_only)
    cfg = _cfg(tmp_path, tiny_model_dir("qwen2_5_vl"), synth_dir, "finetune=lora", "lora_vision=true", "max_steps=20", "gradient_checkpointing=true",
               "gradient_checkpointing_kwargs={use_reentrant: true}", "stop_on_bad_grads=true", "grad_check_steps=3", "eval.after=true", "eval.max_samples=2")
    result = train(cfg)
    assert result.steps == 3  # stopped at the third bad step, not after 20
    problems = json.loads((tmp_path / "report.json").read_text())["grad_problems"]
    assert len(problems) == 1 and "trainable group 'adapters (vision)' had zero gradients for 3 steps" in problems[0], problems
    assert "visual.blocks" in problems[0] and "Likely cause" in capsys.readouterr().out


def test_targets_are_written_in_reading_order_whatever_the_annotation_order(tiny_model_dir):
    settings = TaskSettings.for_model("qwen3_vl", AutoProcessor.from_pretrained(tiny_model_dir("qwen3_vl")), classes=["a", "b", "c"])
    from vlmdet.data.sample import Sample

    boxes = np.array([[50, 60, 70, 80], [10, 10, 20, 20], [60, 10, 90, 30], [5, 60, 15, 70]], float)
    labels = ["a", "b", "c", "a"]
    rng = np.random.default_rng(0)
    texts = set()
    for _ in range(5):
        order = rng.permutation(4)
        s = Sample(id="x", image_wh=(100, 100), boxes=boxes[order], labels=[labels[i] for i in order])
        texts.add(settings.target(s))
    assert len(texts) == 1  # one target whatever order the file lists the objects in
    decoded = settings.decode(texts.pop(), (100, 100))
    # top to bottom, then left to right
    np.testing.assert_allclose(decoded.boxes[:, :2], [[10, 10], [60, 10], [5, 60], [50, 60]], atol=0.1)
    assert canonical_order(boxes, labels)[1] == decoded.labels == ["b", "c", "a", "a"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl", "gemma3"])
def test_an_image_token_feature_mismatch_names_the_sample(family, tiny_model_dir, synth_dir):
    """A collator that cut the sequence (here TRL's, with a max_length) leaves fewer image tokens than features.
    Qwen's grid and Gemma 3's fixed count say each row's count (the row is named); InternVL's tiles do not,
    so the batch's rows are named."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from vlmdet.train.collator import DetectionCollator

    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    ds = open_dataset(synth_dir, "train")
    settings = TaskSettings.for_model(family, processor, classes=ds.classes)
    rows = [settings.row(s) | {"id": s.source} for s in ds.samples[:2]]
    collator = DetectionCollator(processor)
    collator(rows)  # the real one: fine
    collator._trl = DataCollatorForVisionLanguageModeling(processor=processor, max_length=20, completion_only_loss=True)
    with pytest.raises(ValueError, match=r"\d+ image tokens in the text but \d+ image features; the prompt was cut or the processor changed") as err:
        collator(rows)
    named = f"samples {rows[0]['id']}, {rows[1]['id']}: " if family == "internvl" else f"sample {rows[0]['id']}: "
    assert str(err.value).startswith(named)


def test_a_run_that_does_not_beat_the_base_says_so(tiny_model_dir, synth_dir, tmp_path, capsys):
    args = [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={tmp_path}", "max_steps=1", "save_strategy=no",
            *FAST_TRAIN, "eval_steps=1000", "eval.max_samples=2", "eval.max_new_tokens=8"]
    assert main(["train", *args]) == 0  # one step from random weights: junk before, junk after
    err = capsys.readouterr().err  # warnings go to stderr, where a script piping stdout still sees them
    assert "WARNING: the fine-tuned model is not better than the base on mAP50" in err
    assert "WARNING: the fine-tuned model does not beat a box that ignores the image: mAP50 0.000 vs" in err
    assert "**Verdict:** the fine-tuned model is NOT better than the base on mAP50 (0.000 -> 0.000)" in (tmp_path / "report.md").read_text()


def test_the_report_verdict_follows_the_figures(tmp_path):
    from vlmdet.report import write_report

    write_report(tmp_path, {"map50": 0.1}, {"map50": 0.5}, {"model": "m"})
    assert "is better than the base on mAP50 (0.100 -> 0.500)" in (tmp_path / "report.md").read_text()
    write_report(tmp_path, {"map50": 0.5}, {"map50": 0.4}, {"model": "m"})
    assert "is NOT better than the base on mAP50 (0.500 -> 0.400)" in (tmp_path / "report.md").read_text()
