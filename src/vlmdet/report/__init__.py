"""Reports: the metrics table (markdown, terminal, HTML) and the before-vs-after report of a training run
(``report.json``, ``report.md``, ``report.html``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmdet.metrics import DetectionResult

ROWS = (
    ("mAP50", "map50", "{:.3f}"),
    ("mAP50-95", "map", "{:.3f}"),
    ("mAP75", "map75", "{:.3f}"),
    ("AR@100", "ar100", "{:.3f}"),
    ("mAP50 (ranked by confidence: {kind})", "by_score.{kind}.map50", "{:.3f}"),
    ("mAP50-95 (ranked by confidence: {kind})", "by_score.{kind}.map", "{:.3f}"),
    ("F1@0.5", "f1_50", "{:.3f}"),
    ("F1@0.95", "f1_95", "{:.3f}"),
    ("mean IoU (matched)", "mean_iou", "{:.3f}"),
    ("duplicate rate", "duplicate_rate", "{:.1%}"),
    ("hallucinated labels", "hallucinated_rate", "{:.1%}"),
    ("count error / image", "count_error", "{:.2f}"),
    ("parse failures", "parse_failure_rate", "{:.1%}"),
    ("predictions / image", "preds_per_image", "{:.2f}"),
)


def _get(result: dict[str, Any] | None, key: str) -> Any:
    node: Any = result
    for part in key.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return node


def _fmt(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    v = _get(result, key)
    if v is None:
        return "—"
    return "n/a" if v == -1 else fmt.format(v)


def comparison_rows(columns: dict[str, dict[str, Any] | None]) -> list[list[str]]:
    """One row per figure any column has (a figure no column has, e.g. confidence-ranked AP from a
    model run without confidences, is left out)."""
    kinds = sorted({k for r in columns.values() if r for k in (r.get("by_score") or {})})
    expanded = [(label.format(kind=k), key.format(kind=k), fmt) for label, key, fmt in ROWS for k in (kinds if "{kind}" in key else [None])]
    rows = [[label] + [_fmt(r, key, fmt) for r in columns.values()] for label, key, fmt in expanded if any(_get(r, key) is not None for r in columns.values())]
    if any(r and r.get("acc50", -1) >= 0 for r in columns.values()):
        rows.append(["Acc@0.5 (grounding)"] + [_fmt(r, "acc50", "{:.3f}") for r in columns.values()])
    return rows


def markdown_table(columns: dict[str, dict[str, Any] | None]) -> str:
    head = "| metric | " + " | ".join(columns) + " |"
    sep = "| --- | " + " | ".join("---:" for _ in columns) + " |"
    body = ["| " + " | ".join(r) + " |" for r in comparison_rows(columns)]
    return "\n".join([head, sep, *body])


def print_table(columns: dict[str, dict[str, Any] | None], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for row in comparison_rows(columns):
        table.add_row(*row)
    Console().print(table)


def verdict(before: dict[str, Any] | None, after: dict[str, Any] | None, names: tuple[str, str] = ("the fine-tuned model", "the base")) -> str | None:
    """One line: is the trained model better than where it started on mAP50 (None when undefined)."""
    if not (after and before and after.get("map50", -1) >= 0 and before.get("map50", -1) >= 0):
        return None
    word = "better" if after["map50"] > before["map50"] else "NOT better"
    return f"Verdict: {names[0]} is {word} than {names[1]} on mAP50 ({before['map50']:.3f} -> {after['map50']:.3f})."


def decoding_note(meta: dict[str, Any]) -> str:
    dec = meta.get("decoding") or {}
    over = dec.get("overrides") or {}
    how = "greedy decoding" if dec.get("greedy", True) else "non-greedy decoding"
    return (f"Both models answer with the same {how}" + (f" (overrides: {json.dumps(over)})" if over else ", every penalty and n-gram ban off")
            + f"; box confidences: {meta.get('confidence', 'geometric_mean')} of the box's token probabilities.")


def run_columns(before: dict | None, after: dict | None, meta: dict[str, Any], baselines: Any = None) -> dict[str, dict | None]:
    """The report's columns: before, after, and the image-blind baselines (:mod:`vlmdet.metrics.baselines`:
    a ``Baselines`` or its ``to_dict()``, as a ``TrainResult`` holds it)."""
    columns = {meta.get("before_name", "base model (before)"): before, meta.get("after_name", "fine-tuned (after)"): after}
    if isinstance(baselines, dict):
        return {**columns, **(baselines.get("results") or {})}
    return {**columns, **(baselines.columns() if baselines is not None else {})}


def write_report(out_dir: str | Path, before: DetectionResult | dict | None, after: DetectionResult | dict | None, meta: dict[str, Any],
                 gallery: Any = (), log_history: Any = None, baselines: Any = None) -> Path:
    """Write ``report.json``, ``report.md`` and ``report.html`` comparing the base model with the fine-tuned
    one and with the image-blind ``baselines`` (a :class:`~vlmdet.metrics.baselines.Baselines`)."""
    from vlmdet.metrics.baselines import verdict as baseline_verdict
    from vlmdet.report.html import write_html

    out = Path(out_dir)
    b = before.to_dict() if isinstance(before, DetectionResult) else before
    a = after.to_dict() if isinstance(after, DetectionResult) else after
    names = tuple(meta.get("verdict_names") or ("the fine-tuned model", "the base"))
    blind = baseline_verdict((a or {}).get("map50"), baselines, names[0]) if baselines is not None else None
    (out / "report.json").write_text(json.dumps({"before": b, "after": a, **meta, **({"baselines": baselines.to_dict(), "baseline_verdict": blind}
                                                                                     if baselines is not None else {})}, indent=2, default=str))
    columns = run_columns(b, a, meta, baselines)
    line = verdict(b, a, names)
    lines = [
        f"# vlmdet report: {meta.get('model', '')}",
        "",
        f"Eval split `{meta.get('eval_split', '')}` of `{meta.get('data', '')}`: {meta.get('eval_images', '?')} images. {decoding_note(meta)}",
        "",
        markdown_table(columns),
        "",
        "Scores: mAP50 etc. give every box score 1.0 and keep the order the model listed its boxes (the one operating "
        "point a user gets); the rows ranked by confidence use each box's confidence from its token probabilities.",
    ]
    if line:
        lines += ["", f"**{line.split(': ', 1)[0]}:** {line.split(': ', 1)[1]}"]
    if baselines is not None:
        lines += ["", baselines.describe()] + ([f"**Against the baselines:** {blind}."] if blind else [])
    if meta.get("train_seconds") is not None:
        lines += ["", f"Training: {meta.get('steps')} steps in {meta['train_seconds']:.0f} s."]
    per_class = (a or {}).get("per_class_ap") or {}
    if per_class:
        lines += ["", "Per-class AP@[.5:.95] after fine-tuning:", "", "| class | AP |", "| --- | ---: |"]
        lines += [f"| {k} | {'n/a' if v == -1 else f'{v:.3f}'} |" for k, v in per_class.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    write_html(out / "report.html", f"vlmdet report: {meta.get('model', '')}", columns, gallery=gallery, log_history=log_history,
               settings={k: v for k, v in meta.items() if k not in ("grad_problems",)},
               notes=[x for x in (line, baselines.describe() if baselines is not None else None, blind) if x])
    return path
