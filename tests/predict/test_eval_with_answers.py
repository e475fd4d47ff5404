"""eval, predict, --compare and the results file on models that write real boxes (tests/answering.py):
perfect answers score 1, boxes come back in original pixels paired with their own images, and a
COCO file's own category ids survive into results.json."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from transformers import AutoProcessor

from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.rows import TaskSettings, canonical_order

from vlmdet.families import FAMILIES
REMAP = {1: 3, 2: 7, 3: 11, 4: 42}  # non-contiguous, like real COCO's 1..90 with gaps


@pytest.fixture(scope="module")
def noncontig(synth_dir, tmp_path_factory):
    """The synthetic val split with category ids 3, 7, 11, 42."""
    root = tmp_path_factory.mktemp("noncontig")
    ann = json.loads((synth_dir / "val" / "annotations.json").read_text())
    for c in ann["categories"]:
        c["id"] = REMAP[c["id"]]
    for a in ann["annotations"]:
        a["category_id"] = REMAP[a["category_id"]]
    shutil.copytree(synth_dir / "val" / "images", root / "val" / "images")
    (root / "val" / "annotations.json").write_text(json.dumps(ann))
    return root


def _settings(model_dir, family, classes, **kw):
    return TaskSettings.for_model(family, AutoProcessor.from_pretrained(model_dir), classes=classes, **kw)


def _table_row(report: str, name: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


@pytest.mark.parametrize("family", FAMILIES)
def test_perfect_answers_score_one_and_come_back_on_their_own_images(family, answers, tiny_model_dir, noncontig, tmp_path, capsys):
    model = tiny_model_dir(family)
    ds = open_dataset(noncontig, "val")
    settings = _settings(model, family, ds.classes)
    answers.register(model, ds.samples, settings.target)
    # batches of 3 sorted by image size: the predictor must put every answer back on its own image
    areas = [s.image_wh[0] * s.image_wh[1] for s in ds]
    assert sorted(range(len(ds)), key=lambda i: areas[i]) != list(range(len(ds)))
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model), "--data", str(noncontig), "--out", str(out), "--batch-size", "3"]) == 0
    m = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    assert m["map50"] == 1.0 and m["map75"] == 1.0 and m["parse_failure_rate"] == 0.0
    assert set(m["per_class_ap"]) == set(ds.classes) and all(v >= 0.9 for v in m["per_class_ap"].values() if v != -1)
    assert len(list((out / "images").glob("*.png"))) == 8 and "no confidence" in (out / "report.md").read_text()
    assert m["n_pred"] == m["n_gt"] == sum(len(s.targets[1]) for s in ds) > 0
    preds = json.loads((out / "predictions.json").read_text())
    for s, p in zip(ds, preds):
        gt_boxes, gt_labels = canonical_order(*s.targets)
        assert p["id"] == s.id and p["labels"] == gt_labels
        if gt_labels:  # original pixels, within one quantisation step of the codec
            np.testing.assert_allclose(p["boxes"], gt_boxes, atol=max(settings.codec.step(s.image_wh)) + 0.01)
    capsys.readouterr()

    # results.json keeps the COCO file's category ids and the confidences: `vlmdet metrics` gives
    # metrics.json's confidence-ranked figures
    results = json.loads((out / "results.json").read_text())
    assert {r["category_id"] for r in results} <= set(REMAP.values()) and len(results) == m["n_pred"]
    assert sorted(r["score"] for r in results) == pytest.approx(sorted(c for p in preds for c in p["confidences"]), abs=1e-5)
    assert main(["metrics", "--gt", str(noncontig / "val" / "annotations.json"), "--pred", str(out / "results.json")]) == 0
    scored = json.loads(capsys.readouterr().out)
    # one name for the figure everywhere: the confidence setting metrics.json records is the by_score key
    assert m["confidence"] == "geometric_mean" and list(m["by_score"]) == ["geometric_mean"]
    ranked = m["by_score"]["geometric_mean"]
    for name in ("map", "map50", "map75", "map_small", "map_medium", "map_large", "ar100"):
        assert scored[name] == pytest.approx(ranked[name], abs=1e-9), name
    assert scored["per_class_ap"] == pytest.approx(ranked["per_class_ap"], abs=1e-9)


def test_compare_puts_two_different_models_side_by_side(answers, tiny_model_dir, noncontig, tmp_path):
    good = tiny_model_dir("qwen2_5_vl")
    worse = shutil.copytree(good, tmp_path / "worse")
    ds = open_dataset(noncontig, "val")
    settings = _settings(good, "qwen2_5_vl", ds.classes)
    answers.register(good, ds.samples, settings.target)

    def miss_the_last_box(s):
        boxes, labels = canonical_order(*s.targets)
        return settings.codec.encode(boxes[:-1], labels[:-1], s.image_wh)

    answers.register(worse, ds.samples, miss_the_last_box)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(good), "--compare", str(worse), "--data", str(noncontig), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    # the two models, then the two image-blind baselines
    assert header.count("|") == 6 and good.name in header and "worse" in header
    assert header.endswith("| baseline: mean box | baseline: whole image |")
    map50 = _table_row(report, "mAP50")
    assert map50[0] == "1.000" and float(map50[1]) < 0.9
    assert _table_row(report, "predictions / image")[0] != _table_row(report, "predictions / image")[1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [round(metrics[str(m)]["map50"], 3) for m in (good, worse)] == [1.0, float(map50[1])]
    assert [round(r["map50"], 3) for r in metrics["baselines"]["results"].values()] == [float(v) for v in map50[2:]]
    assert metrics["verdicts"][0].startswith(f"{good.name} beats the image-blind baselines: mAP50 1.000")


def test_predict_returns_the_boxes_in_original_pixels(answers, tiny_model_dir, synth_dir, tmp_path, capsys):
    model = tiny_model_dir("qwen2_5_vl")
    ds = open_dataset(synth_dir, "test")
    samples = [s for s in ds if len(s.boxes)][:3]
    settings = _settings(model, "qwen2_5_vl", ds.classes)
    answers.register(model, samples, settings.target)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--classes", ",".join(ds.classes), "--out", str(out), *[str(s.image_path) for s in samples]]) == 0
    records = json.loads((out / "predictions.json").read_text())
    for s, r in zip(samples, records):
        gt_boxes, gt_labels = canonical_order(*s.targets)
        assert r["image"] == str(s.image_path) and r["image_wh"] == list(s.image_wh) and r["labels"] == gt_labels
        np.testing.assert_allclose(r["boxes_xyxy"], gt_boxes, atol=max(settings.codec.step(s.image_wh)) + 0.01)
        assert (out / f"{s.image_path.stem}_pred.png").is_file()


def _short_train(out, model, data, *extra):
    from tests.conftest import FAST_TRAIN

    args = [f"model={model}", f"data={data}", f"output_dir={out}", "max_steps=2", "save_strategy=no", *FAST_TRAIN, "eval.before=false", "eval.after=false", "eval_steps=1000", *extra]
    assert main(["train", *args]) == 0


def test_default_lora_run_end_to_end_train_adapter_eval_predict(answers, tiny_model_dir, synth_dir, tmp_path):
    run = tmp_path / "run"
    _short_train(run, tiny_model_dir("qwen2_5_vl"), synth_dir, "finetune=lora")
    assert (run / "adapter_config.json").is_file() and not (run / "model.safetensors").exists()
    ds = open_dataset(synth_dir, "val")
    settings = TaskSettings.load(run)
    answers.register(run, ds.samples, settings.target)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(run), "--data", str(synth_dir), "--out", str(out)]) == 0
    assert getattr(answers.loaded[-1].inner, "peft_config", None), "the adapter was not applied"
    assert next(iter(json.loads((out / "metrics.json").read_text()).values()))["map50"] == 1.0
    img = ds.samples[0].image_path
    assert main(["predict", "--model", str(run), str(img), "--out", str(tmp_path / "pred")]) == 0
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]["labels"] == canonical_order(*ds.samples[0].targets)[1]


def _grounding_jsonl(synth_dir, split, path):
    ds = open_dataset(synth_dir, split)
    lines = []
    for s in ds:
        if len(s.boxes):
            lines.append(json.dumps({"image": str(s.image_path), "phrase": f"the {s.labels[0]}", "bbox": s.boxes[0].tolist()}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_grounding_end_to_end_reports_acc50(answers, tiny_model_dir, synth_dir, tmp_path):
    data = tmp_path / "ground"
    data.mkdir()
    _grounding_jsonl(synth_dir, "train", data / "train.jsonl")
    _grounding_jsonl(synth_dir, "val", data / "val.jsonl")
    run = tmp_path / "run"
    _short_train(run, tiny_model_dir("qwen2_5_vl"), data, "task=ground")
    settings = TaskSettings.load(run)
    assert settings.task == "ground" and settings.classes == []
    val = open_dataset(data, "val")
    assert all(s.phrase for s in val)
    answers.register(run, val.samples, settings.target)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(run), "--data", str(data), "--out", str(out)]) == 0
    m = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    assert m["acc50"] == 1.0 and m["map50"] == 1.0
    acc = _table_row((out / "report.md").read_text(), "Acc@0.5 (grounding)")  # the model, then the two baselines
    assert acc[0] == "1.000" and len(acc) == 3 and all(float(v) < 1.0 for v in acc[1:])
    prompts = [p for call in answers.loaded[-1].calls for p in call["prompts"]]
    assert all(re.search(r'Locate "the (circle|square|triangle|star)" in the image', p) for p in prompts)


def test_detect_named_prompts_name_only_each_images_classes(answers, tiny_model_dir, synth_dir, tmp_path):
    run = tmp_path / "run"
    _short_train(run, tiny_model_dir("qwen2_5_vl"), synth_dir, "task=detect_named")
    settings = TaskSettings.load(run)
    assert settings.task == "detect_named"
    val = open_dataset(synth_dir, "val")
    answers.register(run, val.samples, settings.target)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(run), "--data", str(synth_dir), "--out", str(out), "--batch-size", "1"]) == 0
    assert next(iter(json.loads((out / "metrics.json").read_text()).values()))["map50"] == 1.0
    calls = answers.loaded[-1].calls
    sizes = sorted(val.samples, key=lambda s: (s.image_wh[0] * s.image_wh[1]))  # the predictor's order, batch size 1
    for call, s in zip(calls, sizes):
        named = list(dict.fromkeys(s.labels)) or val.classes
        assert f'categories: "{", ".join(named)}"' in call["prompts"][0]


def test_several_datasets_are_scored_each_then_averaged(answers, tiny_model_dir, synth_dir, tmp_path):
    model = tiny_model_dir("qwen2_5_vl")
    other = tmp_path / "other"  # a second dataset: the synthetic test split, served as "val"
    shutil.copytree(synth_dir / "test", other / "val")
    a, b = open_dataset(synth_dir, "val"), open_dataset(other, "val")
    settings = _settings(model, "qwen2_5_vl", a.classes)

    def first_box_only(s):
        boxes, labels = canonical_order(*s.targets)
        return settings.codec.encode(boxes[:1], labels[:1], s.image_wh)

    perfect = {id(s) for s in a.samples}
    answers.register(model, a.samples + b.samples, lambda s: settings.target(s) if id(s) in perfect else first_box_only(s))
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model), "--data", str(synth_dir), "--data", str(other), "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())[str(model)]
    per = summary["per_dataset"]
    assert list(per) == [synth_dir.name, other.name]
    assert per[synth_dir.name]["f1_50"] == 1.0 and per[other.name]["f1_50"] < 0.9  # the datasets really differ
    for key in ("map", "map50", "f1_50", "mean_iou", "count_error"):
        assert summary["mean"][key] == pytest.approx((per[synth_dir.name][key] + per[other.name][key]) / 2), key
    assert summary["mean"]["n_images"] == len(a) + len(b) and summary["decoding"]["greedy"]
    for name in per:  # each dataset keeps its own outputs
        assert json.loads((out / name / "metrics.json").read_text())[str(model)]["n_images"] == 8
    report = (out / "report.md").read_text()
    assert f"| metric | {synth_dir.name} | {other.name} | mean |" in report
