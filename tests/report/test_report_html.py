"""report.html: one self-contained page, rendered in headless Chromium — not blank, every image loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def render(page, tmp_path) -> tuple[dict[str, int], np.ndarray]:
    """(images total / loaded as the page counted them after load, the screenshot as an array)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`; .ci/run installs it where apt-get works)")
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    counts = {k: int(v) for k, v in re.findall(r'data-images-(total|loaded)="(\d+)"', dom)}
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()], capture_output=True, timeout=120)
    return counts, np.asarray(Image.open(shot).convert("L"), dtype=float)


def test_the_report_of_a_training_run_renders_with_every_image(short_run, tmp_path):
    page = short_run.output_dir / "report.html"
    text = page.read_text()
    assert "<h2>Training</h2>" in text and "<h2>Gallery" in text and "<h2>Per-class AP</h2>" in text and "&quot;decoding&quot;" in text
    assert "src='http" not in text and 'src="http' not in text  # self-contained
    counts, shot = render(page, tmp_path)
    # training curves (loss, detection, gradient norms), per-class bars, one gallery row per eval image
    assert counts["total"] >= 3 + 1 + 4 and counts["loaded"] == counts["total"], counts
    assert shot.std() > 10 and (shot < 128).mean() > 0.01  # drawn, not a blank page


def test_an_eval_report_page_puts_models_side_by_side(answers, tiny_model_dir, synth_dir, tmp_path):
    from transformers import AutoProcessor

    from vlmdet.cli import main
    from vlmdet.data.readers import open_dataset
    from vlmdet.rows import TaskSettings

    model = tiny_model_dir("qwen2_5_vl")
    other = shutil.copytree(model, tmp_path / "other")
    ds = open_dataset(synth_dir, "val")
    settings = TaskSettings.for_model("qwen2_5_vl", AutoProcessor.from_pretrained(model), classes=ds.classes)
    answers.register(model, ds.samples, settings.target)
    answers.register(other, ds.samples, lambda s: settings.codec.encode(np.zeros((0, 4)), [], s.image_wh))  # finds nothing
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model), "--compare", str(other), "--data", str(synth_dir), "--out", str(out)]) == 0
    text = (out / "report.html").read_text()
    header = re.search(r"<tr><th>metric</th>(.*?)</tr>", text).group(1)
    assert model.name in header and "other" in header
    # the worst images come first: the gallery opens with an image the second model got wrong
    first_caption = re.search(r"<figcaption>(.*?)</figcaption>", text).group(1)
    assert "F1@.5 0.00" in first_caption
    counts, shot = render(out / "report.html", tmp_path)
    assert counts["loaded"] == counts["total"] >= len(ds) + 1 and shot.std() > 10
