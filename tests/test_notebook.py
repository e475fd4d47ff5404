"""examples/quickstart.ipynb runs in a real Jupyter kernel (nbclient + ipykernel): every cell, the
before/after/baseline table in the train and eval results, a drawn image from Detector + supervision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (pip install -e '.[test]')")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.timeout(600)
def test_the_quickstart_notebook_executes_in_a_kernel(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("VLMDET_QUICKSTART", "1")
    monkeypatch.setenv("VLMDET_QUICKSTART_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    client = nbclient.NotebookClient(nb, timeout=540, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in cells)
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert errors == []

    def html_of(marker: str) -> str:
        cell = next(c for c in cells if marker in c.source)
        return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs if o.output_type == "execute_result")

    train_cell = next(c for c in cells if "result = vlmdet.train(" in c.source)
    shown = [o for o in train_cell.outputs if o.output_type == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in shown)  # tqdm's notebook bars (ipywidgets)
    assert any("text/html" in o.data for o in shown)  # the Trainer's own notebook progress table
    text = "".join(o.text for o in train_cell.outputs if o.output_type == "stream")
    assert "IProgress not found" not in text and "%|" not in text  # no terminal bars drawn into the notebook
    train_html = html_of("result = vlmdet.train(")
    for column in ("base model (before)", "fine-tuned (after)", "baseline: mean box", "baseline: whole image"):
        assert f"<th>{column}</th>" in train_html
    assert "<td>mAP50</td>" in train_html and "<img" in train_html
    eval_html = html_of("scores = vlmdet.evaluate(")
    assert "<th>baseline: mean box</th>" in eval_html and "<td>mAP50-95</td>" in eval_html
    drawn = next(c for c in cells if "sv.BoxAnnotator()" in c.source)
    assert any("image/png" in o.get("data", {}) for o in drawn.outputs if o.output_type == "execute_result")
    assert "vlmdet export" in html_of("exported = vlmdet.export(")
    assert (tmp_path / "out" / "export" / "vlmdet.json").is_file()
    if os.environ.get("VLMDET_NOTEBOOK_HTML"):  # keep the executed notebook to render it (README: how the screenshot was made)
        nbformat.write(nb, os.environ["VLMDET_NOTEBOOK_HTML"])
