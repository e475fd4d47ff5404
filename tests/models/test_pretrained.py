"""tiny-pretrained:<family>: the scenes it learns from, the cache, the config and CLI that reach it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vlmdet.config import ConfigError
from vlmdet.data.scenes import PALETTE, describe, render_scene, scene_rng
from vlmdet.data.synth import SHAPES
from vlmdet.families import TinySpec
from vlmdet.models.pretrained import PRETRAIN_FILE, PROMPTS, PretrainRecipe, cache_key, ensure_pretrained, scene_row
from vlmdet.train.config import load_config

FAST = PretrainRecipe(steps=3, batch_size=2, eval_scenes=2)


class _Codec:  # the codec a row is written with only has to encode; the real one is tested below
    def encode(self, boxes, labels, wh):
        return json.dumps([[*map(float, b), lab] for b, lab in zip(boxes, labels)])


def test_scenes_are_a_pure_function_of_seed_and_index():
    a, b = render_scene(scene_rng(0, 7)), render_scene(scene_rng(0, 7))
    assert a.objects == b.objects and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert render_scene(scene_rng(0, 8)).objects != a.objects or not a.objects


def test_scene_objects_are_in_the_image_distinct_colours_and_named():
    for i in range(60):
        sc = render_scene(scene_rng(3, i))
        w, h = sc.image.size
        colours = [c for _, _, c in sc.objects]
        assert len(set(colours)) == len(colours) and set(colours) <= set(PALETTE)
        for (x1, y1, x2, y2), shape, _ in sc.objects:
            assert shape in SHAPES and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_describe_reads_left_to_right():
    objs = [([50, 0, 70, 20], "star", "red"), ([0, 0, 20, 20], "circle", "blue")]
    assert describe(objs) == "a blue circle, a red star"
    assert describe([]) == "no shapes"


def test_rows_cover_every_task_and_the_locate_answer_is_the_family_format():
    rows = [scene_row(i, PretrainRecipe(), _Codec()) for i in range(80)]
    assert {r["task"] for r in rows} == {"describe", "count", "locate"}
    loc = next(r for r in rows if r["task"] == "locate")
    colour = loc["prompt"][0]["content"][1]["text"].split()[2]
    assert loc["prompt"][0]["content"][1]["text"] == PROMPTS["locate"].format(colour=colour)
    assert json.loads(loc["completion"][0]["content"][0]["text"])[0][4] == f"{colour} shape"
    assert not any("circle" in r["prompt"][0]["content"][1]["text"] for r in rows)  # never a shape name in a prompt


def test_locate_answer_round_trips_through_the_real_codec(tiny_model_dir):
    from vlmdet.models.loading import load_processor
    from vlmdet.models.pretrained import _codec

    processor, _ = load_processor(tiny_model_dir("qwen2_5_vl"), "qwen2_5_vl")
    codec = _codec("qwen2_5_vl", processor)
    for i in range(40):
        row = scene_row(i, PretrainRecipe(), codec)
        if row["task"] != "locate":
            continue
        r = PretrainRecipe()
        sc = render_scene(scene_rng(0, i), r.min_side, r.max_side, r.max_objects)
        dec = codec.decode(row["completion"][0]["content"][0]["text"], sc.image.size)
        assert not dec.failed and len(dec.boxes) == 1
        assert any(np.abs(dec.boxes[0] - np.array(b)).max() < 3.0 for b, _, _ in sc.objects)  # pixel space, resize rounding


def test_cache_key_changes_with_recipe_and_spec_only():
    k = cache_key("qwen2_5_vl", TinySpec(), FAST)
    assert k == cache_key("qwen2_5_vl", TinySpec(), dataclasses.replace(FAST))
    assert k != cache_key("qwen2_5_vl", TinySpec(), dataclasses.replace(FAST, steps=4))
    assert k != cache_key("qwen2_5_vl", TinySpec(rope_theta=20.0), FAST)
    assert k != cache_key("qwen2_vl", TinySpec(), FAST)


def test_built_once_then_reused_with_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMDET_CACHE", str(tmp_path))
    said: list[str] = []
    path = ensure_pretrained("qwen2_5_vl", TinySpec(), FAST, log=said.append)
    info = json.loads((path / PRETRAIN_FILE).read_text())
    assert set(info["scores"]) == {"describe_exact", "describe_shapes", "count_exact", "locate_iou"}
    assert info["recipe"]["steps"] == 3 and len(info["history"]) >= 1 and (path / "model.safetensors").is_file()
    assert str(path).startswith(str(tmp_path / "tiny-pretrained"))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    said.clear()
    assert ensure_pretrained("qwen2_5_vl", TinySpec(), FAST, log=said.append) == path
    assert said == [f"pre-trained tiny qwen2_5_vl model (cached): {path}"]


def test_a_family_outside_the_chat_layout_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMDET_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"tiny-pretrained:florence2: .* answers as seq2seq\. Use tiny:florence2"):
        ensure_pretrained("florence2", TinySpec(), FAST)


def test_a_run_config_reaches_the_cache(tmp_path, monkeypatch):
    from vlmdet.run import model_source

    monkeypatch.setenv("VLMDET_CACHE", str(tmp_path))
    cfg = load_config(None, ["model=tiny-pretrained:qwen2_5_vl", "pretrain.steps=3", "pretrain.batch_size=2", "pretrain.eval_scenes=2",
                             "pretrain.mix=[0.4,0.2,0.4]"])
    src = model_source(cfg, tmp_path / "run")
    assert src == str(ensure_pretrained("qwen2_5_vl", TinySpec(seed=cfg.seed), FAST, log=lambda _: None))
    with pytest.raises(ConfigError, match=r"pretrain\.step: not PretrainRecipe fields \(did you mean pretrain\.steps\?\)"):
        load_config(None, ["pretrain.step=3"])


def test_cli_builds_and_prints_the_scores(tmp_path, monkeypatch, capsys):
    from vlmdet.cli import main

    monkeypatch.setenv("VLMDET_CACHE", str(tmp_path / "cache"))
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--pretrain", "--out", str(tmp_path / "m"),
                 "pretrain.steps=3", "pretrain.batch_size=2", "pretrain.eval_scenes=2"]) == 0
    out = capsys.readouterr().out
    assert "tiny-pretrained:qwen2_5_vl: describe exact" in out and (tmp_path / "m" / PRETRAIN_FILE).is_file()
    with pytest.raises(SystemExit, match="unknown setting 'pretrain.stepz'"):
        main(["tiny-model", "--family", "qwen2_5_vl", "--pretrain", "pretrain.stepz=3"])
