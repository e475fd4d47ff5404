"""Image-blind baselines, pinned against hand-computed values on a small COCO file."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers.conftest import solid, write_coco
from vlmdet.data.readers import read_coco
from vlmdet.metrics.baselines import MEAN_BOX, WHOLE_IMAGE, fit_and_score, mean_box_baseline, verdict, whole_image_baseline


@pytest.fixture
def small(tmp_path):
    """train: 3 images of 100x100 (one cat each, one also a dog), 1 negative; val: 2 images of 200x100."""
    names = ["t0.png", "t1.png", "t2.png", "t3.png", "v0.png", "v1.png"]
    sizes = [(100, 100)] * 4 + [(200, 100)] * 2
    for n, wh in zip(names, sizes):
        solid(tmp_path / n, wh)
    images = [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, (w, h)) in enumerate(zip(names, sizes))]
    xywh = [(1, 10, 10, 40, 40), (2, 30, 30, 40, 40), (3, 20, 20, 40, 40), (3, 70, 70, 20, 20),  # train: cats at 10/30/20, a dog
            (5, 40, 20, 80, 40), (6, 0, 0, 20, 10)]  # val: a cat where the mean box lands, a cat far from it
    cats = [1, 1, 1, 2, 1, 1]
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
            for k, ((i, *b), c) in enumerate(zip(xywh, cats))]
    ds = read_coco(write_coco(tmp_path, images, anns))
    return ds.subset([0, 1, 2, 3]), ds.subset([4, 5])


def test_the_mean_box_is_the_most_frequent_class_set_and_its_mean_layout(small):
    train, _ = small
    b = mean_box_baseline(train.samples, train.classes)
    # class sets: (cat,) twice, (cat, dog) once -> cat alone; its mean box over t0, t1: [(0.1+0.3)/2, ..., (0.5+0.7)/2]
    assert b.labels == ["cat"] and "2 of 3 images with boxes" in b.how
    np.testing.assert_allclose(b.boxes, [[0.2, 0.2, 0.6, 0.6]])
    boxes, labels = b.predict((200, 100))
    np.testing.assert_allclose(boxes, [[40, 20, 120, 60]])
    w = whole_image_baseline(train.classes)
    np.testing.assert_allclose(w.predict((200, 100))[0], [[0, 0, 200, 100], [0, 0, 200, 100]])
    assert w.labels == ["cat", "dog"]


def test_baselines_are_scored_like_models(small):
    train, val = small
    res = fit_and_score(train.samples, val.samples, train.classes, "train")
    mean, whole = res.results[MEAN_BOX], res.results[WHOLE_IMAGE]
    # mean box [40,20,120,60] on v0's cat [40,20,120,60]: a hit; on v1's cat [0,0,20,10]: a false positive and a miss.
    assert (mean.n_pred, mean.precision50, mean.recall50) == (2, 0.5, 0.5)
    # COCO AP (101-point interpolation) with constant scores in listing order: one hit then one miss -> 0.5 precision up to recall 0.5
    assert mean.map50 == pytest.approx(0.5, abs=0.01)
    # whole image: IoU with v0's cat = 3200/20000 = 0.16, with v1's cat 200/20000: nothing found; the dog boxes hit no dog
    assert whole.map50 == pytest.approx(0.0) and whole.recall50 == 0.0 and whole.n_pred == 4
    assert res.best_map50 == pytest.approx(0.5, abs=0.01)


def test_a_model_that_writes_the_mean_box_does_not_beat_the_baseline(small):
    train, val = small
    res = fit_and_score(train.samples, val.samples, train.classes, "train")
    line = verdict(res.results[MEAN_BOX].map50, res, "the fine-tuned model")
    assert line.startswith("the fine-tuned model does not beat a box that ignores the image: mAP50 0.50")
    assert "mean box baseline" in line
    assert verdict(0.9, res).startswith("the model beats the image-blind baselines")
    assert verdict(-1, res) is None
