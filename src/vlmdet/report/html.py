"""``report.html``: one self-contained page (images and plots embedded) that people would rather look at
than read — written by ``vlmdet train`` (before/after), ``vlmdet eval`` (and ``--compare``) and ``vlmdet rl``.

Sections: the metrics table; training curves (loss, eval mAP50 / F1 vs step, gradient norms by
group) when there was training; per-class AP bars; a gallery of the same images with ground truth
and each model's boxes side by side, the worst images first (lowest F1 at IoU 0.5 of the last
column, then the largest count error); the decoding and data settings. Plots are matplotlib,
boxes supervision's annotators (:mod:`vlmdet.report.draw`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlmdet.report.draw import COLUMN_COLOURS, GT_COLOUR, side_by_side


@dataclass
class GalleryItem:
    """One image of the gallery: ground truth and, per column (model), the predicted boxes."""

    title: str
    image: Image.Image
    gt_boxes: np.ndarray
    gt_labels: list[str]
    preds: dict[str, tuple[np.ndarray, list[str], list[float] | None]] = field(default_factory=dict)


def gallery_items(samples: Sequence[Any], columns: dict[str, Sequence[Any]], limit: int = 12) -> list[GalleryItem]:
    """The ``limit`` worst images of ``samples`` (by the last column's predictions), with every column's boxes.

    ``columns``: name -> predictions (``Prediction``-like: ``boxes``, ``labels``, ``confidences``) in
    sample order."""
    from vlmdet.metrics.matching import match, precision_recall_f1

    if not columns:
        return []
    last = list(columns.values())[-1]

    def badness(i: int) -> tuple[float, int]:
        s, p = samples[i], last[i]
        gt_boxes, gt_labels = s.targets
        labels = ["object"] * len(p.labels) if s.phrase else p.labels
        gtl = ["object"] * len(gt_labels) if s.phrase else gt_labels
        tp = len(match(p.boxes, labels, gt_boxes, gtl, 0.5))
        return precision_recall_f1(tp, len(p.boxes), len(gt_boxes))[2], -abs(len(p.boxes) - len(gt_boxes))

    order = sorted(range(len(samples)), key=badness)[:limit]
    items = []
    for i in order:
        s = samples[i]
        f1 = badness(i)[0]
        items.append(GalleryItem(f"{s.phrase + ' — ' if s.phrase else ''}{Path(str(s.source or s.id)).name}  (F1@.5 {f1:.2f})", s.load_image(), *s.targets,
                                 {name: (preds[i].boxes, preds[i].labels, preds[i].confidences) for name, preds in columns.items()}))
    return items


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def curve_figures(log_history: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(title, png data URL)`` for the training curves found in a Trainer ``log_history``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(e["step"], e[key]) for e in log_history if isinstance(e.get(key), (int, float)) and "step" in e]
        return [p[0] for p in pts], [p[1] for p in pts]

    figures = []
    panels = [
        ("Loss", [("loss", "train loss"), ("eval_loss", "eval loss")], False),
        ("Detection on the eval split", [("eval_map50", "mAP50"), ("eval_f1_50", "F1@0.5"), ("eval_map", "mAP50-95"), ("eval_map50_by_confidence", "mAP50 (ranked by confidence)")], False),
        ("Gradient norm by group", [(k, k.split("/", 1)[1]) for k in sorted({k for e in log_history for k in e if k.startswith("grad_norm/")})], True),
    ]
    for title, keys, log_scale in panels:
        lines = [(label, *series(key)) for key, label in keys]
        lines = [(label, xs, ys) for label, xs, ys in lines if xs and (not log_scale or any(y > 0 for y in ys))]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(5.2, 3.0))
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="o" if len(xs) < 15 else None, ms=3, label=label)
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures.append((title, _figure_png(fig)))
    return figures


def per_class_figure(columns: dict[str, dict[str, Any] | None]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {k: (v or {}).get("per_class_ap") or {} for k, v in columns.items()}
    classes = list(dict.fromkeys(c for pcap in named.values() for c in pcap))
    if not classes:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(classes) * max(1, len(named))), 3.0))
    width = 0.8 / max(1, len(named))
    for k, (name, pcap) in enumerate(named.items()):
        values = [max(0.0, pcap.get(c, -1.0)) for c in classes]
        colour = [v / 255 for v in COLUMN_COLOURS[k % len(COLUMN_COLOURS)]]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=name, color=colour)
    ax.set_xticks(np.arange(len(classes)) + width * (len(named) - 1) / 2, classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP@[.5:.95]")
    ax.set_title("Per-class AP", fontsize=10)
    ax.legend(fontsize=8)
    return _figure_png(fig)


def _table(columns: dict[str, dict[str, Any] | None]) -> str:
    from vlmdet.report import comparison_rows

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in comparison_rows(columns))
    return f"<table class='metrics'><tr><th>metric</th>{head}</tr>{body}</table>"


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
.figs img{margin:6px;border:1px solid #eee}.gallery figure{display:inline-block;margin:8px;vertical-align:top}
figcaption{font-size:12px;color:#555;max-width:640px}pre{background:#f6f6f6;padding:10px;font-size:12px;overflow:auto}
.verdict{font-weight:bold;padding:6px 10px;background:#eef}
"""

# Marks the page once every embedded image decoded (a rendering test reads it).
ONLOAD = """<script>window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-images-total',im.length);document.body.setAttribute('data-images-loaded',ok);});</script>"""


def _figure(item: GalleryItem) -> str:
    """One gallery image: ground truth, then each column's boxes, side by side."""
    panels = [("ground truth", item.gt_boxes, item.gt_labels, None, GT_COLOUR)]
    panels += [(name, b, lab, conf, COLUMN_COLOURS[k % len(COLUMN_COLOURS)]) for k, (name, (b, lab, conf)) in enumerate(item.preds.items())]
    return f"<figure><img alt='{html.escape(item.title)}' src='{_png(side_by_side(item.image, panels))}'><figcaption>{html.escape(item.title)}</figcaption></figure>"


def fragment(title: str, columns: dict[str, dict[str, Any] | None], gallery: Sequence[GalleryItem] = (), images: Sequence[str | Path] = (),
             notes: Sequence[str] = (), limit: int = 3) -> str:
    """The metrics table and a few images as an HTML fragment: what a result object shows in Jupyter
    (``_repr_html_``). ``images`` are PNG files (e.g. ``vlmdet eval``'s ``images/``)."""
    parts = [f"<div class='vlmdet'><style>{CSS.replace('body{', '.vlmdet{')}</style><h3>{html.escape(title)}</h3>"]
    parts += [f"<p class='verdict'>{html.escape(n)}</p>" for n in notes if n]
    parts.append(_table(columns))
    figs = [_figure(item) for item in list(gallery)[:limit]]
    figs += [f"<figure><img alt='{html.escape(Path(p).name)}' src='data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}'>"
             f"<figcaption>{html.escape(Path(p).name)}</figcaption></figure>" for p in list(images)[: max(0, limit - len(figs))]]
    if figs:
        parts += ["<div class='gallery'>", *figs, "</div>"]
    parts.append("</div>")
    return "\n".join(parts)


def write_html(
    path: str | Path,
    title: str,
    columns: dict[str, dict[str, Any] | None],
    gallery: Sequence[GalleryItem] = (),
    log_history: Sequence[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the page (see the module docstring) to ``path``."""
    path = Path(path)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='verdict'>{html.escape(n)}</p>" if n.startswith("Verdict") else f"<p>{html.escape(n)}</p>" for n in notes]
    parts += ["<h2>Metrics</h2>", _table(columns)]
    figures = curve_figures(log_history) if log_history else []
    if figures:
        parts += ["<h2>Training</h2><div class='figs'>"] + [f"<img alt='{html.escape(t)}' src='{src}'>" for t, src in figures] + ["</div>"]
    bars = per_class_figure(columns)
    if bars:
        parts += ["<h2>Per-class AP</h2><div class='figs'>", f"<img alt='per-class AP' src='{bars}'>", "</div>"]
    if gallery:
        names = list(gallery[0].preds)
        legend = ", ".join(f"{n} ({'red' if k == 0 else 'blue' if k == 1 else 'other'})" for k, n in enumerate(names))
        parts += [f"<h2>Gallery — worst images first</h2><p>Ground truth (green), then {html.escape(legend)}; numbers are box confidences.</p><div class='gallery'>"]
        parts += [_figure(item) for item in gallery]
        parts.append("</div>")
    if settings:
        parts += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>"]
    parts += [ONLOAD, "</body></html>"]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
