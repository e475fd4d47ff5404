from __future__ import annotations

import json

from pycocotools.coco import COCO
from transformers import AutoModelForImageTextToText

from vlmdet.cli import main


def test_tiny_model_command(tmp_path, capsys):
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--out", str(tmp_path / "m"), "--seed", "1"]) == 0
    assert "written to" in capsys.readouterr().out
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_data_synth_command(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "5", "--val", "2", "--test", "2", "--seed", "4"]) == 0
    assert len(COCO(str(tmp_path / "train" / "annotations.json")).imgs) == 5
    assert json.loads((tmp_path / "dataset.json").read_text())["seed"] == 4


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--classes", "hexagon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown synthetic shape(s) ['hexagon']; available: circle, square" in err
