"""The whole path on real photographs annotated by other people (tests/assets/neon_trees: NEON aerial
tiles, DeepForest's crown boxes, Pascal VOC): read, stats, train, eval, predict, export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN
from vlmdet.cli import main
from vlmdet.data.readers import dataset_splits, open_dataset

NEON = Path(__file__).parent / "assets" / "neon_trees"


def test_the_voc_folder_reads_as_supervision_reads_it():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import supervision as sv

    ds = open_dataset(NEON)  # a VOC folder given as --data, recognised by its layout
    assert dataset_splits(NEON) is None  # no ImageSets: one set, split by vlmdet
    ref = sv.DetectionDataset.from_pascal_voc(str(NEON / "JPEGImages"), str(NEON / "Annotations"))
    assert (len(ds), sum(len(s.boxes) for s in ds)) == (len(ref), sum(len(d) for _, _, d in ref)) == (84, 340)
    theirs = {Path(p).name: d for p, _, d in ref}
    for s in ds:
        d = theirs[s.image_path.name]
        np.testing.assert_allclose(np.sort(s.boxes, axis=0), np.sort(d.xyxy, axis=0), atol=1e-6)
    assert ds.classes == ["tree"] and any(s.meta["truncated"].any() for s in ds)


def test_stats_on_the_real_photos(capsys):
    assert main(["data", "stats", "--data", str(NEON), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    train, val = st["splits"]
    assert (train["images"], val["images"], train["boxes"] + val["boxes"]) == (67, 17, 340)
    assert train["widths"] == [128, 128, 128] and "held out 20% for val" in st["split_note"]


@pytest.fixture(scope="module")
def neon_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("neon") / "run"
    args = [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={NEON}", f"output_dir={out}", "max_steps=8", "save_strategy=no", *FAST_TRAIN,
            "eval.before=false", "eval_steps=1000", "eval.max_new_tokens=96"]
    assert main(["train", *args]) == 0
    return out


def test_train_on_real_photos_holds_out_val_and_reports_baselines(neon_run):
    info = json.loads((neon_run / "run.json").read_text())
    split = info["fingerprint"]["split"]
    assert (split["train"], split["val"], split["seed"]) == (67, 17, 0) and len(info["fingerprint"]["eval_ids"]) == 17
    report = json.loads((neon_run / "report.json").read_text())
    assert report["eval_images"] == 4 and set(report["baselines"]["results"]) == {"baseline: mean box", "baseline: whole image"}


def test_eval_predict_export_on_real_photos(neon_run, tmp_path, capsys):
    # eval of the run on the same folder scores the 17 held-out tiles, and refuses the training tiles
    assert main(["eval", "--model", str(neon_run), "--data", str(NEON), "--out", str(tmp_path / "ev"), "--max-new-tokens", "96"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics[str(neon_run)]["n_images"] == 17 and metrics[str(neon_run)]["n_gt"] == 67
    assert "baselines" in metrics and metrics["baselines"]["fitted_on"] == "the model's training split"
    capsys.readouterr()
    assert main(["eval", "--model", str(neon_run), "--data", str(NEON), "--split", "train", "--out", str(tmp_path / "ev2")]) == 2
    assert "also training images" in capsys.readouterr().err
    # predict: boxes in the photo's own pixels
    photo = next((NEON / "JPEGImages").glob("OSBS_029_*.jpg"))
    assert main(["predict", "--model", str(neon_run), str(photo), "--out", str(tmp_path / "pred")]) == 0
    # export, and the exported folder loads through Detector like any model
    assert main(["export", "--model", str(neon_run), "--out", str(tmp_path / "export")]) == 0
    from vlmdet import Detector

    det = Detector.from_pretrained(tmp_path / "export").predict([str(photo)])[0]
    assert det.metadata["image_wh"] == (128, 128) and det.xyxy.shape[1] == 4
