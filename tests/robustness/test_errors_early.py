"""Errors that used to come out as tracebacks or too late: each is one line naming the setting,
the file or the sample, before a model loads — and the good form of the same input works."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.data.readers.conftest import solid, write_coco
from vlmdet.cli import main
from vlmdet.config import ConfigError
from vlmdet.data.readers import ReadOptions, read_coco, read_refcoco
from vlmdet.data.sample import DataError
from vlmdet.train.config import load_config


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.max_sample=3"], r"unknown setting\(s\) eval\.max_sample: not vlmdet eval fields \(did you mean eval\.max_samples\?\)"),
        (["synth.clases=[circle]"], r"synth\.clases: not SynthConfig fields \(did you mean synth\.classes\?\)"),
        (["tiny.hidden=64"], r"tiny\.hidden: not TinySpec fields"),
        (["sft.learning_rat=1e-3"], r"sft\.learning_rat: not SFTConfig fields \(did you mean sft\.learning_rate\?\)"),
        (["lora.rank=8"], r"lora\.rank: not LoraConfig fields"),
        (["learnin_rate=1e-3"], r"unknown setting 'learnin_rate'.*did you mean learning_rate\?"),
        (["max_steps=ten"], r"sft\.max_steps: expected an integer, got 'ten'"),
        (["learning_rate=fast"], r"sft\.learning_rate: expected a number, got 'fast'"),
        (["eval.batch_size=2.5"], r"eval\.batch_size: expected an integer, got 2\.5"),
        (["synth.max_objects=[1]"], r"synth\.max_objects: expected an integer, got \[1\]"),
        (["lora.r=eight"], r"lora\.r: expected an integer, got 'eight'"),
        (["classes=cat"], r"classes: expected a list or null, got 'cat'"),
        (["freeze_vision=maybe"], r"freeze_vision: expected true/false or null, got 'maybe'"),
        (["finetune=partial"], r"finetune must be lora, qlora or full, got 'partial'"),
        (["on_bad_data=ignore"], r"on_bad_data must be raise or skip"),
        (["lr_scheduler_type=cosine_warm"], r"sft: .*cosine_warm"),
        (["--resume", "--overwrite"], r"resume and overwrite exclude each other"),
    ],
)
def test_every_config_mistake_names_the_setting_before_anything_loads(overrides, message, tmp_path, capsys):
    # model=./missing would fail on loading: each of these must stop before that, with exit 2
    args = [f"output_dir={tmp_path / 'run'}", "model=./missing-model", "data=./missing-data", *overrides]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny:qwen2_5_vl\nsft:\n  learning_rate: 1e-3\n   max_steps: 10\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML at line 4, column 13"):
        load_config(cfg)
    cfg.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a config is a YAML mapping"):
        load_config(cfg)
    with pytest.raises(ConfigError, match=r"max_steps=\[1: invalid YAML"):
        load_config(None, ["max_steps=[1"])


def test_good_settings_of_every_section_are_accepted(tmp_path):
    cfg = load_config(None, ["eval.max_samples=null", "synth.classes=[circle, star]", "tiny.mrope_section=[2, 7, 7]", "sft.learning_rate=1",
                             "lora.target_modules=[q_proj]", "classes=[a, b]", "eval_split=", f"output_dir={tmp_path}"])
    assert cfg.eval.max_samples is None and cfg.sft["learning_rate"] == 1 and cfg.lora["target_modules"] == ["q_proj"]
    assert cfg.eval_split is None


def test_a_config_error_from_the_cli_is_one_line_and_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vlmdet", "train", "eval.max_sample=3", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [next(line for line in out.stderr.splitlines() if "eval.max_sample" in line)]


# ----------------------------------------------------------------------------- images the model cannot take
def test_extreme_aspect_ratio_is_a_data_error_or_a_counted_skip(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data" / "train"
    solid(data / "a.png", (64, 48))
    solid(data / "thin.png", (4000, 10))  # 400:1 — the Qwen processor refuses anything over 200:1
    write_coco(data, [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"id": 2, "file_name": "thin.png", "width": 4000, "height": 10}],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}, {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 9, 5]}])
    args = [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}", "eval_split=", "max_steps=1",
            "finetune=full", "gradient_checkpointing=false", "save_strategy=no", "per_device_train_batch_size=2"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "image id 2 (thin.png): the Qwen2VLImageProcessor refuses a 4000x10 image (absolute aspect ratio must be smaller than 200" in err
    assert "--on-bad-data skip" in err
    assert main(["train", *args, "on_bad_data=skip"]) == 0
    assert "1 images the model cannot take were skipped" in capsys.readouterr().out


def test_an_image_beyond_the_decompression_limit_is_a_data_error(tmp_path, monkeypatch):
    solid(tmp_path / "a.png", (64, 48))
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}], [])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 // 4)  # PIL raises beyond 2x the limit
    with pytest.raises(DataError, match=r"image id 1 \(a\.png\).*larger than PIL's decompression-bomb limit.*Downscale it.*--on-bad-data skip"):
        read_coco(path)
    assert len(read_coco(path, options=ReadOptions(on_error="skip")).report.skipped) == 1
    monkeypatch.undo()
    assert len(read_coco(path)) == 1


# ----------------------------------------------------------------------------- vlmdet metrics inputs
@pytest.fixture
def gt_file(tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}],
          "categories": [{"id": 3, "name": "cat"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return tmp_path / "gt.json"


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        ([{"image_id": 1, "category_id": 3, "bbox": [10, 10, "w", 20], "score": 1}], r"detection 0: bbox must be 4 finite numbers"),
        ([{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20], "score": 1}], r"detection 0: bbox must be 4 finite numbers"),
        ([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 1}], r"category id 1 is not in .*gt\.json \(its ids: \[3\]\)"),
        ([{"image_id": 1, "category_id": 3, "bbox": [30, 30, -20, 10], "score": 1}], r"negative width or height — is it \[x1, y1, x2, y2\]\?"),
        ([{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": "high"}], r"score must be a finite number"),
        ({"not": "a list"}, r"a COCO results file is a JSON list"),
    ],
)
def test_metrics_on_malformed_results_is_one_clear_line(pred, message, gt_file, tmp_path, capsys):
    import re

    (tmp_path / "pred.json").write_text(json.dumps(pred))
    assert main(["metrics", "--gt", str(gt_file), "--pred", str(tmp_path / "pred.json")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_metrics_on_a_ground_truth_that_is_not_coco(gt_file, tmp_path, capsys):
    (tmp_path / "pred.json").write_text("[]")
    for bad in ("[1, 2, 3]", '{"images": []}', "not json"):
        (tmp_path / "bad.json").write_text(bad)
        assert main(["metrics", "--gt", str(tmp_path / "bad.json"), "--pred", str(tmp_path / "pred.json")]) == 2
        assert "bad.json" in capsys.readouterr().err
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 1}]))
    assert main(["metrics", "--gt", str(gt_file), "--pred", str(tmp_path / "pred.json")]) == 0
    assert json.loads(capsys.readouterr().out)["map"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- untrusted files
class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # creates a file when unpickled: the proof that code ran


def _refcoco_files(tmp_path):
    solid(tmp_path / "images" / "a.png", (64, 48))
    (tmp_path / "instances.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                                                         "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}]}))
    return [{"ref_id": 0, "ann_id": 5, "image_id": 1, "split": "train", "sentences": [{"sent": "the red square"}]}]


def test_a_crafted_refcoco_pickle_is_refused_and_runs_nothing(tmp_path):
    refs = _refcoco_files(tmp_path)
    proof = tmp_path / "pwned"
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps([*refs, _Payload(str(proof))]))
    with pytest.raises(DataError, match=r"refuses to load (builtins|io)\.open.*never runs code from a data file"):
        read_refcoco(tmp_path / "refs(unc).p", tmp_path / "instances.json", tmp_path / "images")
    assert not proof.exists()
    # the release format (plain lists and dicts, protocol 2 as written by Python 2) reads
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    ds = read_refcoco(tmp_path / "refs(unc).p", tmp_path / "instances.json", tmp_path / "images")
    assert ds[0].phrase == "the red square" and np.allclose(ds[0].boxes, [[1, 2, 11, 12]])


def test_reward_weights_are_checked_as_numbers_before_anything_loads(tmp_path, capsys):
    # a weight that is not a number used to pass the config check and fail after the model loaded
    from vlmdet.train.rl_config import load_config as load_rl_config

    args = [f"output_dir={tmp_path / 'rl'}", "model=./missing-model", "data=./missing-data"]
    assert main(["rl", *args, "rewards.f1=oops"]) == 2
    assert "rewards: expected a mapping of strings to numbers, got {'f1': 'oops'}" in capsys.readouterr().err
    cfg = load_rl_config(None, [*args, "rewards.f1=2", "rewards.count=0"])
    assert cfg.rewards == {"f1": 2, "count": 0}
