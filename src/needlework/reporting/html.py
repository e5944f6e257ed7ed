"""A single self-contained HTML page: the report's tables and figures plus sample outputs per run.

Figures are embedded as base64 data URIs and the CSS is inline, so the file can be mailed or opened
from anywhere. Samples per run: up to ``per_run`` wrong and ``per_run`` right ones (by the primary
metric), in file order, with the prompt (when the run stored it), the output and every score.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from needlework.records import Prediction
from needlework.reporting.runs import EvalRun
from needlework.reporting.tables import Table

PROMPT_CHARS = 600
OUTPUT_CHARS = 400

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3} pre{white-space:pre-wrap;margin:0;font-size:12px;max-width:520px}
tr.ok{background:#eefaee} tr.bad{background:#fbeeee} img{max-width:100%}
details{margin:.5em 0} .muted{color:#666}
"""


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more chars]"


def table_html(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _prompt(row: Prediction) -> str:
    """The stored prompt text, or a note that only its hash was kept."""
    if row.messages:
        return "\n\n".join(f"[{m['role']}] {m['content']}" for m in row.messages)
    return f"(prompt not stored in predictions.jsonl; sha256 {row.prompt_sha256})"


def pick_samples(run: EvalRun, per_run: int) -> list[Prediction]:
    """Up to ``per_run`` samples scored below 1 and ``per_run`` at 1 or more, file order."""
    taken, out = {True: 0, False: 0}, []
    for row in run.predictions or []:
        right = row.scores.get(run.primary_metric, 0) >= 1
        if taken[right] < per_run:
            taken[right] += 1
            out.append(row)
    return out


def samples_html(run: EvalRun, per_run: int) -> str:
    if run.predictions is None:
        return "<p class='muted'>No predictions.jsonl for this run.</p>"
    rows = []
    for row in pick_samples(run, per_run):
        cls = "ok" if row.scores.get(run.primary_metric, 0) >= 1 else "bad"
        scores = ", ".join(f"{k}={v:g}" for k, v in row.scores.items())
        meta = json.dumps(row.meta, ensure_ascii=False, sort_keys=True)
        rows.append(
            f"<tr class='{cls}'><td>{_e(row.id)}</td>"
            f"<td><pre>{_e(_cut(_prompt(row), PROMPT_CHARS))}</pre></td>"
            f"<td><pre>{_e(_cut(str(row.output), OUTPUT_CHARS))}</pre></td>"
            f"<td>{_e(scores)}</td><td><pre>{_e(_cut(meta, 300))}</pre></td></tr>"
        )
    head = "<tr><th>id</th><th>prompt</th><th>output</th><th>scores</th><th>meta</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def html_page(
    tables: list[tuple[str, Table]],
    figures: list[tuple[str, Path]],
    runs: list[EvalRun],
    notes: list[str],
    problems: list[str],
    per_run: int = 10,
) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>needlework report</title>",
        f"<style>{CSS}</style></head><body><h1>needlework report</h1>",
    ]
    if problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        parts.append(f"<h2>Problems found</h2><ul>{items}</ul>")
    for title, table in tables:
        parts.append(f"<h2>{_e(title)}</h2>{table_html(table)}")
    if notes:
        items = "".join(f"<li value='{i}'>{_e(t)}</li>" for i, t in enumerate(notes, 1))
        parts.append(f"<h3>Notes</h3><ol>{items}</ol>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Samples per run</h2>")
    for run in runs:
        parts.append(
            f"<details><summary>{_e(run.name)} <span class='muted'>{_e(run.path)}"
            f"</span></summary>{samples_html(run, per_run)}</details>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)
