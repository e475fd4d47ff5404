"""from vlmdet import Detector: supervision Detections in original pixels, from paths, PIL images and
arrays, on models that write real boxes (tests/answering.py); predict is a shell over it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from transformers import AutoProcessor

from vlmdet.cli import main
from vlmdet.data.readers import open_dataset
from vlmdet.data.sample import DataError
from vlmdet.rows import TaskSettings, canonical_order


def _settings(model_dir, family, classes, **kw):
    return TaskSettings.for_model(family, AutoProcessor.from_pretrained(model_dir), classes=classes, **kw)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "paligemma", "florence2"])
def test_detector_returns_supervision_detections_in_original_pixels(family, answers, tiny_model_dir, synth_dir):
    from vlmdet import Detector

    model = tiny_model_dir(family)
    ds = open_dataset(synth_dir, "val")
    settings = _settings(model, family, ds.classes)
    answers.register(model, ds.samples, settings.target)
    detector = Detector.from_pretrained(model, classes=ds.classes)
    samples = [s for s in ds.samples if len(s.boxes)][:4]
    images = [samples[0].image_path, str(samples[1].image_path), samples[2].load_image(), np.asarray(samples[3].load_image())]
    found = detector.predict(images, batch_size=3)
    assert len(found) == 4 and all(isinstance(d, sv.Detections) for d in found)
    for s, det in zip(samples, found):
        boxes, labels = canonical_order(*s.targets)
        step = max(settings.codec.step(s.image_wh))
        np.testing.assert_allclose(det.xyxy, boxes, atol=step + 1e-3)  # original pixels, each image its own answer
        assert list(det.data["class_name"]) == labels
        assert det.class_id.tolist() == [ds.classes.index(label) for label in labels]
        assert det.confidence is not None and det.confidence.shape == (len(labels),) and ((det.confidence > 0) & (det.confidence <= 1)).all()
        assert det.metadata["answer"] == settings.target(s) and det.metadata["parse_failed"] is False
        assert det.metadata["image_wh"] == tuple(s.image_wh)
    one = detector.predict(samples[0].image_path)  # one image in, one Detections out
    assert isinstance(one, sv.Detections) and len(one) == len(found[0])
    # it plugs into supervision: annotators and its own metrics take it as is
    annotated = sv.BoxAnnotator().annotate(np.asarray(samples[0].load_image()).copy(), found[0])
    assert annotated.shape[:2] == samples[0].image_wh[::-1]
    truth = sv.Detections(xyxy=canonical_order(*samples[0].targets)[0], class_id=found[0].class_id)
    assert sv.box_iou_batch(truth.xyxy, found[0].xyxy).diagonal().min() > 0.5


def test_labels_outside_the_classes_keep_their_name_with_class_id_minus_one(answers, tiny_model_dir, synth_dir):
    from vlmdet import Detector

    model = tiny_model_dir("qwen3_vl")
    ds = open_dataset(synth_dir, "val")
    s = ds.samples[0]
    answers.register(model, [s], lambda _: '[{"bbox_2d": [0, 0, 500, 500], "label": "Circles"}, {"bbox_2d": [500, 500, 900, 900], "label": "unicorn"}]')
    det = Detector.from_pretrained(model, classes=ds.classes).predict(s.image_path)
    assert list(det.data["class_name"]) == [ds.classes[ds.classes.index("circle")], "unicorn"]  # the label policy: plural -> class
    assert det.class_id.tolist() == [ds.classes.index("circle"), -1]


def test_grounding_and_per_call_classes(answers, tiny_model_dir, synth_dir):
    from vlmdet import Detector

    model = tiny_model_dir("qwen2_5_vl")
    ds = open_dataset(synth_dir, "val")
    s = ds.samples[0]
    answers.register(model, [s], lambda _: '```json\n[\n\t{"bbox_2d": [10, 10, 40, 40], "label": "the red one"}\n]\n```')
    detector = Detector.from_pretrained(model, classes=ds.classes)
    det = detector.predict(s.load_image(), phrase="the red one")
    assert det.class_id.tolist() == [0] and list(det.data["class_name"]) == ["the red one"]
    other = detector.predict(s.load_image(), classes=["red one", "blue one"])
    assert other.class_id.tolist() == [-1]  # "the red one" is not a class of this call


def test_bad_inputs_name_the_image_and_the_fix(tiny_model_dir, tmp_path):
    from vlmdet import Detector

    detector = Detector.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    with pytest.raises(ValueError, match="no saved class list"):
        detector.predict(Image.new("RGB", (64, 64)))
    with pytest.raises(DataError, match="image file not found: .*nope.png"):
        detector.predict(tmp_path / "nope.png", classes=["cat"])
    with pytest.raises(DataError, match="image 1: an array image must be uint8"):
        detector.predict([Image.new("RGB", (64, 64)), np.zeros((64, 64, 3), dtype=np.float32)], classes=["cat"])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        detector.predict(tmp_path / "bad.png", classes=["cat"])
    with pytest.raises(ValueError, match="phrase is empty"):
        detector.predict(Image.new("RGB", (64, 64)), phrase=" ")
    with pytest.raises(ValueError, match="confidence must be one of"):
        Detector.from_pretrained(tiny_model_dir("qwen2_5_vl"), confidence="max")


def test_predict_cli_writes_what_the_detector_returns(answers, tiny_model_dir, synth_dir, tmp_path):
    from vlmdet import Detector

    model = tiny_model_dir("smolvlm")
    ds = open_dataset(synth_dir, "val")
    settings = _settings(model, "smolvlm", ds.classes)
    answers.register(model, ds.samples, settings.target)
    paths = [str(s.image_path) for s in ds.samples[:3]]
    assert main(["predict", "--model", str(model), *paths, "--classes", ",".join(ds.classes), "--out", str(tmp_path / "p")]) == 0
    records = json.loads((tmp_path / "p" / "predictions.json").read_text())
    found = Detector.from_pretrained(model, classes=ds.classes).predict(paths)
    for r, det in zip(records, found):
        assert r["labels"] == list(det.data["class_name"]) and np.allclose(r["boxes_xyxy"], det.xyxy, atol=0.01)
        assert r["confidences"] == pytest.approx(det.confidence.tolist(), rel=1e-5)
    assert len(list((tmp_path / "p").glob("*_pred.png"))) == 3
