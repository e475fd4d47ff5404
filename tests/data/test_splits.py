"""Splits that never leak: held-out splits of one-set datasets, and no evaluation image that trains."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import ReadOptions, dataset_splits, open_dataset
from vlmdet.data.sample import DataError, DetectionDataset, Sample
from vlmdet.data.splits import Holdout, check_no_overlap, find_overlap, holdout_split, read_split, read_train_eval


def one_file_dataset(folder, n=20, classes=("cat", "dog", "bird")):
    """n images of distinct sizes; image k holds class k % len(classes) (bird only in every 5th)."""
    images, anns = [], []
    for k in range(n):
        solid(folder / f"img{k}.png", (40 + k, 30 + k), colour=(k * 10 % 255, 100, 100))
        images.append({"id": k + 1, "file_name": f"img{k}.png", "width": 40 + k, "height": 30 + k})
        cid = 3 if k % 5 == 0 else 1 + k % 2
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": cid, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0})
    return write_coco(folder, images, anns, [{"id": i + 1, "name": c} for i, c in enumerate(classes)])


def test_a_single_file_has_no_splits_and_is_split_by_vlmdet_deterministically(tmp_path):
    path = one_file_dataset(tmp_path)
    assert dataset_splits(path) is None
    train, val = read_train_eval(str(path), "train", "val", ReadOptions(), Holdout(0.2, seed=0))
    assert len(train) == 16 and len(val) == 4
    assert not {s.id for s in train} & {s.id for s in val}
    again_train, again_val = read_train_eval(str(path), "train", "val", ReadOptions(), Holdout(0.2, seed=0))
    assert [s.id for s in again_val] == [s.id for s in val] and [s.id for s in again_train] == [s.id for s in train]
    other = read_train_eval(str(path), "train", "val", ReadOptions(), Holdout(0.2, seed=1))[1]
    assert [s.id for s in other] != [s.id for s in val]
    # every class on both sides (bird: 4 images)
    assert {c for s in val for c in s.labels} == {"cat", "dog", "bird"} == {c for s in train for c in s.labels}
    assert train.split_info == val.split_info and train.split_info["val"] == 4 and train.split_info["seed"] == 0
    # read_split (what eval uses) gives the same held-out images
    assert [s.id for s in read_split(str(path), "val", holdout=Holdout(0.2, seed=0))] == [s.id for s in val]


def test_a_dataset_with_its_own_val_split_is_used_as_it_is(tmp_path):
    for split, n in (("train", 6), ("valid", 3)):
        (tmp_path / split).mkdir()
        one_file_dataset(tmp_path / split, n)
        (tmp_path / split / "annotations.json").rename(tmp_path / split / "_annotations.coco.json")
    train, val = read_train_eval(str(tmp_path), "train", "val", ReadOptions())
    assert (len(train), len(val)) == (6, 3) and train.split_info is None and val.split_info is None


def test_only_a_train_split_gets_its_val_carved_from_train(tmp_path):
    (tmp_path / "train").mkdir()
    one_file_dataset(tmp_path / "train", 10)
    assert dataset_splits(tmp_path) == ["train"]
    train, val = read_train_eval(str(tmp_path), "train", "val", ReadOptions(), Holdout(0.3))
    assert (len(train), len(val)) == (7, 3) and train.split_info["from"].endswith("[train]")


def test_a_test_split_when_asked_and_a_clear_error_when_not(tmp_path):
    path = one_file_dataset(tmp_path, 20)
    parts = holdout_split(open_dataset(path), Holdout(0.2, 0.1, seed=0))
    assert {k: len(v) for k, v in parts.items()} == {"train": 14, "val": 4, "test": 2}
    ids = [s.id for v in parts.values() for s in v]
    assert len(ids) == len(set(ids)) == 20
    with pytest.raises(DataError, match="no 'test' split"):
        read_train_eval(str(path), "train", "test", ReadOptions(), Holdout(0.2))


def _samples(label_sets):
    return DetectionDataset([Sample(id=str(i), image_wh=(10, 10), boxes=np.tile([1.0, 1, 5, 5], (len(ls), 1)), labels=list(ls))
                             for i, ls in enumerate(label_sets)], sorted({c for ls in label_sets for c in ls}))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=4), min_size=2, max_size=60), st.floats(0.05, 0.5), st.integers(0, 5))
def test_the_split_partitions_the_images_and_every_class_keeps_a_training_image(label_sets, frac, seed):
    ds = _samples(label_sets)
    parts = holdout_split(ds, Holdout(frac, seed=seed))
    train, val = parts["train"], parts["val"]
    ids = [s.id for s in train] + [s.id for s in val]
    assert sorted(ids, key=int) == [str(i) for i in range(len(ds))]  # a partition: nothing lost, nothing twice
    assert len(val) >= 1 and len(train) >= 1
    train_classes = {c for s in train for c in s.labels}
    # no class is only held out — unless holding out any image at all takes a class's only image, and then it is said
    missing = {c for ls in label_sets for c in ls} - train_classes
    assert missing == set(train.split_info.get("classes_only_held_out", []))
    if missing:
        assert all(any(lab in missing for lab in s.labels) for s in val)
    # each class with enough images gets about its share held out
    totals = Counter(c for ls in label_sets for c in set(ls))
    held = Counter(c for s in val for c in set(s.labels))
    for c, t in totals.items():
        if t >= 10:
            assert abs(held[c] - frac * t) <= max(2, 0.25 * frac * t), (c, held[c], t, frac)


def test_overlap_is_found_by_file_by_bytes_and_by_pixels(tmp_path):
    path = one_file_dataset(tmp_path / "a", 6)
    train = open_dataset(path)
    b = tmp_path / "b"
    b.mkdir()
    shutil.copyfile(tmp_path / "a" / "img1.png", b / "copy.png")  # same bytes, other name
    from PIL import Image

    Image.open(tmp_path / "a" / "img2.png").save(b / "resaved.bmp")  # same pixels, other file format
    solid(b / "new.png", (41, 31), colour=(1, 2, 3))  # same size as img1, other pixels
    images = [{"id": 1, "file_name": "copy.png", "width": 41, "height": 31}, {"id": 2, "file_name": "resaved.bmp", "width": 42, "height": 32},
              {"id": 3, "file_name": "new.png", "width": 41, "height": 31}, {"id": 4, "file_name": str(tmp_path / "a" / "img3.png"), "width": 43, "height": 33}]
    other = open_dataset(write_coco(b, images, [], [{"id": 1, "name": "cat"}]))
    found = {s.image_path.name: (t.image_path.name, how) for s, t, how in find_overlap(train, other)}
    assert found == {"copy.png": ("img1.png", "same bytes"), "resaved.bmp": ("img2.png", "same pixels"), "img3.png": ("img3.png", "same file")}
    with pytest.raises(DataError, match=r"3 of the 4 val images are also training images: .*copy.png.*same bytes.*allow_overlap=true"):
        check_no_overlap(train, other)
    assert len(check_no_overlap(train, other, allow=True)) == 3


def test_a_run_on_one_file_is_split_recorded_and_never_scored_on_its_training_images(tmp_path):
    from vlmdet.run import fingerprint, read_splits
    from vlmdet.train.config import TrainConfig

    path = one_file_dataset(tmp_path, 20)
    cfg = TrainConfig(data=str(path), output_dir=str(tmp_path / "run"), val_fraction=0.25, seed=3)
    train, val = read_splits(cfg, str(path))
    assert (len(train), len(val)) == (15, 5)
    fp = fingerprint(cfg, train, val)
    assert fp["split"]["val_fraction"] == 0.25 and fp["split"]["seed"] == 3 and sorted(fp["eval_ids"]) == sorted(s.id for s in val)
    json.dumps(fp)  # goes into run.json
    # the same images in both splits of a folder: refused, naming them
    for split in ("train", "val"):
        (tmp_path / "dup" / split).mkdir(parents=True)
        one_file_dataset(tmp_path / "dup" / split, 4)
    cfg = TrainConfig(data=str(tmp_path / "dup"), output_dir=str(tmp_path / "run2"))
    with pytest.raises(DataError, match=r"4 of the 4 val images are also training images: .*img0.png.*\(same bytes\)"):
        read_splits(cfg, cfg.data)
    cfg = TrainConfig(data=str(tmp_path / "dup"), output_dir=str(tmp_path / "run2"), allow_overlap=True)
    assert [len(d) for d in read_splits(cfg, cfg.data)] == [4, 4]


def test_eval_splits_a_one_file_dataset_as_the_run_did_and_refuses_its_training_images(tmp_path):
    from vlmdet.evaluate import read_eval_split, training_split

    path = one_file_dataset(tmp_path, 20)
    run = tmp_path / "run"
    run.mkdir()
    settings_ = {"data": str(path), "train_split": "train", "val_fraction": 0.25, "test_fraction": 0.0, "seed": 3}
    (run / "run.json").write_text(json.dumps({"status": "finished", "fingerprint": {"settings": settings_}}))
    train = training_split(str(run))
    assert len(train) == 15
    val = read_eval_split(str(run), str(path), "val", train=train)
    expected = read_train_eval(str(path), "train", "val", ReadOptions(), Holdout(0.25, seed=3))[1]
    assert [s.id for s in val] == [s.id for s in expected]
    with pytest.raises(DataError, match="also training images"):
        read_eval_split(str(run), str(path), "train", train=train)
    assert len(read_eval_split(str(run), str(path), "train", allow_overlap=True, train=train)) == 15


def test_bad_fractions_are_config_errors():
    from vlmdet.config import ConfigError
    from vlmdet.train.config import TrainConfig

    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        Holdout(0.6, 0.5)
