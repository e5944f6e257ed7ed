"""Report tables: markdown for reading (wide, formatted) and CSV for analysis (long, raw numbers).

Every builder returns ``(markdown_table, csv_table)``. Deltas are variant − baseline; a cell
without an honest delta shows ``—`` with a numbered note saying why (different samples, missing
predictions ...). Numbers are shown as fractions with three decimals, as the metrics are stored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from needlework.reporting.compare import Delta, Group, Stat
from needlework.reporting.runs import EvalRun

DASH = "—"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def to_markdown(self) -> str:
        def cell(v: Any) -> str:
            text = "" if v is None else str(v)
            return text.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |"]
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()


class Notes:
    """Numbered footnotes, identical texts sharing one number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def to_markdown(self, start: int = 0) -> str:
        """The notes from index ``start`` on (each section lists the ones it added)."""
        return "".join(f"[{i}] {t}  \n" for i, t in enumerate(self.texts[start:], start + 1))


def fmt(x: float | None) -> str:
    return DASH if x is None else f"{x:.3f}"


def fmt_signed(x: float | None) -> str:
    return DASH if x is None else f"{x:+.3f}"


def fmt_stat(s: Stat) -> str:
    """``0.530 [0.480, 0.580]``; with seeds the spread: ``0.530 [CI] (3 seeds 0.510–0.550)``."""
    ci = f" [{fmt(s.ci_low)}, {fmt(s.ci_high)}]" if s.ci_low is not None else ""
    if s.seeds > 1:
        return f"{fmt(s.mean)}{ci} ({s.seeds} seeds {fmt(s.seed_min)}–{fmt(s.seed_max)})"
    return f"{fmt(s.mean)}{ci}"


def fmt_delta(d: Delta | None, notes: Notes) -> str:
    if d is None:
        return ""
    if d.delta is None:
        return f"{DASH} {notes.ref(d.note)}"
    ci = f" [{fmt_signed(d.ci_low)}, {fmt_signed(d.ci_high)}]" if d.ci_low is not None else ""
    return f"{fmt_signed(d.delta)}{ci}" + (f" {notes.ref(d.note)}" if d.note else "")


STAT_CSV = ["mean", "ci_low", "ci_high", "n", "seeds", "seed_min", "seed_max", "seed_std"]
DELTA_CSV = ["delta", "delta_ci_low", "delta_ci_high", "delta_n", "delta_note"]


def stat_csv(s: Stat | None) -> list[Any]:
    if s is None:
        return [None] * len(STAT_CSV)
    return [s.mean, s.ci_low, s.ci_high, s.n, s.seeds, s.seed_min, s.seed_max, s.seed_std]


def delta_csv(d: Delta | None) -> list[Any]:
    if d is None:
        return [None] * len(DELTA_CSV)
    return [d.delta, d.ci_low, d.ci_high, d.n if d.delta is not None else None, d.note or None]


def runs_table(runs: list[EvalRun]) -> tuple[Table, Table]:
    md = Table(["benchmark", "variant", "seed", "model", "n", "run folder"])
    out = Table(["benchmark", "label", "variant", "seed", "model", "n", "predictions", "path"])
    for r in runs:
        preds = len(r.predictions) if r.predictions is not None else None
        md.rows.append([r.label, r.variant, r.seed or "", r.model, r.n, f"`{r.path}`"])
        out.rows.append([r.benchmark, r.label, r.variant, r.seed, r.model, r.n, preds, str(r.path)])
    return md, out


@dataclass
class Row:
    """One (label, variant) line of the overall table."""

    group: Group
    stat: Stat
    delta: Delta | None  # None for the baseline itself or when there is no baseline run
    metric: str = ""
    """The metric of this row; '' for the group's primary metric."""


def overall_table(rows: list[Row], baseline: str, notes: Notes) -> tuple[Table, Table]:
    md = Table(
        ["benchmark", "variant", "metric", "n", "score [95% CI]", f"Δ vs {baseline} [95% CI]"]
    )
    out = Table(["label", "benchmark", "variant", "metric", *STAT_CSV, *DELTA_CSV])
    for row in rows:
        g, s = row.group, row.stat
        metric = row.metric or g.metric
        n = s.n if s.n is not None else "varies"
        md.rows.append([g.label, g.variant, metric, n, fmt_stat(s), fmt_delta(row.delta, notes)])
        out.rows.append(
            [g.label, g.benchmark, g.variant, metric, *stat_csv(s), *delta_csv(row.delta)]
        )
    return md, out


@dataclass
class Extra:
    """A secondary metric's breakdown, shown in columns beside the primary metric's."""

    metric: str
    series: dict[str, dict[str, Stat]]
    deltas: dict[str, dict[str, Delta]]


def breakdown_table(
    label: str,
    field_name: str,
    keys: list[str],
    series: dict[str, dict[str, Stat]],
    deltas: dict[str, dict[str, Delta]],
    baseline: str | None,
    notes: Notes,
    show_key: Callable[[str], str] = str,
    *,
    metric: str = "",
    extra: list[Extra] | tuple[Extra, ...] = (),
) -> tuple[Table, Table]:
    """Rows = breakdown keys; one column per variant, then one Δ column per non-baseline one;
    then the same for each ``extra`` metric, headed ``<variant>: <metric>``. The CSV has one row
    per key, variant and metric (``metric`` names the primary one)."""
    variants = list(series)
    delta_cols = [v for v in variants if v in deltas]
    head = [field_name, "n", *variants, *(f"Δ {v} vs {baseline}" for v in delta_cols)]
    for e in extra:
        head += [f"{v}: {e.metric}" for v in e.series]
        head += [f"Δ {v} vs {baseline}: {e.metric}" for v in e.series if v in e.deltas]
    md = Table(head)
    out = Table(["label", "field", "key", "shown_as", "variant", "metric", *STAT_CSV, *DELTA_CSV])
    blocks = [(metric, series, deltas), *((e.metric, e.series, e.deltas) for e in extra)]
    for key in keys:
        sizes = {series[v][key].n for v in variants if key in series[v]}
        n = sizes.pop() if len(sizes) == 1 else "varies"
        row: list[Any] = [show_key(key), n]
        for _, ser, dels in blocks:
            row += [fmt_stat(ser[v][key]) if key in ser[v] else DASH for v in ser]
            row += [fmt_delta(dels[v].get(key), notes) for v in ser if v in dels]
        md.rows.append(row)
        for name, ser, dels in blocks:
            for v in ser:
                stat = ser[v].get(key)
                delta = dels.get(v, {}).get(key)
                out.rows.append(
                    [label, field_name, key, show_key(key), v, name]
                    + [*stat_csv(stat), *delta_csv(delta)]
                )
    return md, out


def general_table(
    metrics: list[str],
    cells: dict[str, dict[str, Stat]],
    deltas: dict[str, dict[str, Delta]],
    baseline: str | None,
    notes: Notes,
) -> tuple[Table, Table]:
    """Rows = general-benchmark metrics (``task/metric``); columns = variants and deltas."""
    variants = list(cells)
    delta_cols = [v for v in variants if v in deltas]
    md = Table(["metric", *variants, *(f"Δ {v} vs {baseline}" for v in delta_cols)])
    out = Table(["metric", "variant", *STAT_CSV, *DELTA_CSV])
    for m in metrics:
        row = [fmt_stat(cells[v][m]) if m in cells[v] else DASH for v in variants]
        row += [fmt_delta(deltas[v].get(m), notes) for v in delta_cols]
        md.rows.append([m, *row])
        for v in variants:
            out.rows.append(
                [m, v, *stat_csv(cells[v].get(m)), *delta_csv(deltas.get(v, {}).get(m))]
            )
    return md, out


def heatmap_table(
    rows: list[str],
    cols: list[str],
    values: dict[tuple[str, str], float],
    show_row: Callable[[str], str] = str,
    show_col: Callable[[str], str] = str,
) -> Table:
    """Markdown grid: one row per depth, one column per context length (keys shown readably)."""
    table = Table(["depth \\ length", *map(show_col, cols)])
    for r in rows:
        table.rows.append([show_row(r), *(fmt(values.get((r, c))) for c in cols)])
    return table
