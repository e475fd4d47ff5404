"""Before-vs-after report: ``report.json`` + ``report.md`` and a printed side-by-side table."""

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
    ("mean IoU (matched)", "mean_iou", "{:.3f}"),
    ("parse failures", "parse_failure_rate", "{:.1%}"),
    ("predictions / image", "preds_per_image", "{:.2f}"),
)


def _fmt(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    if result is None or result.get(key) is None:
        return "—"
    v = result[key]
    return "n/a" if v == -1 else fmt.format(v)


def comparison_rows(columns: dict[str, dict[str, Any] | None]) -> list[list[str]]:
    rows = [[label] + [_fmt(r, key, fmt) for r in columns.values()] for label, key, fmt in ROWS]
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


def write_report(out_dir: str | Path, before: DetectionResult | dict | None, after: DetectionResult | dict | None, meta: dict[str, Any]) -> Path:
    """Write ``report.json`` and ``report.md`` comparing the base model with the fine-tuned one."""
    out = Path(out_dir)
    b = before.to_dict() if isinstance(before, DetectionResult) else before
    a = after.to_dict() if isinstance(after, DetectionResult) else after
    (out / "report.json").write_text(json.dumps({"before": b, "after": a, **meta}, indent=2, default=str))
    columns = {"base model (before)": b, "fine-tuned (after)": a}
    lines = [
        f"# vlmdet report: {meta.get('model', '')}",
        "",
        f"Eval split `{meta.get('eval_split', '')}` of `{meta.get('data', '')}`: {meta.get('eval_images', '?')} images, "
        f"same prompts and greedy decoding for both models.",
        "",
        markdown_table(columns),
        "",
        "Scores: every predicted box has score 1.0 (VLMs emit no confidence), so AP is measured at the "
        "single operating point the model gives, with boxes ranked in the order the model listed them.",
    ]
    if a and b and a.get("map50", -1) >= 0 and b.get("map50", -1) >= 0:
        verdict = "better" if a["map50"] > b["map50"] else "NOT better"
        lines += ["", f"**Verdict:** the fine-tuned model is {verdict} than the base on mAP50 ({b['map50']:.3f} -> {a['map50']:.3f})."]
    if meta.get("train_seconds") is not None:
        lines += ["", f"Training: {meta.get('steps')} steps in {meta['train_seconds']:.0f} s."]
    per_class = (a or {}).get("per_class_ap") or {}
    if per_class:
        lines += ["", "Per-class AP@[.5:.95] after fine-tuning:", "", "| class | AP |", "| --- | ---: |"]
        lines += [f"| {k} | {'n/a' if v == -1 else f'{v:.3f}'} |" for k, v in per_class.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
