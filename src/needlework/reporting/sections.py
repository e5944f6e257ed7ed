"""Benchmark-specific report sections: MDQA/KV by position, FLenQA by length (CoT and not),
the NIAH length × depth grid, general-benchmark scores, other breakdowns and training runs.

Each section function takes the :class:`~needlework.reporting.report.ReportBuilder` (which owns
the output folder, the footnotes and the baseline) and returns its markdown ('' when there is
nothing to show, with the reason added to the report's problems).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from needlework.reporting import plots
from needlework.reporting.compare import (
    Delta,
    Group,
    KeyFn,
    Stat,
    overall,
    paired_delta,
    seed_scores,
)
from needlework.reporting.tables import (
    DASH,
    DELTA_CSV,
    Extra,
    Notes,
    Table,
    breakdown_table,
    delta_csv,
    fmt,
    fmt_delta,
    general_table,
    heatmap_table,
)

if TYPE_CHECKING:
    from needlework.reporting.report import ReportBuilder

MAX_POSITIONS = 20  # above this many gold positions, KV results are shown in 10 depth bins

# Breakdown fields by benchmark kind, in order of preference (the first one a run has is used).
POSITION_FIELDS = ("gold_position",)
LENGTH_FIELDS = ("ctx_size", "context_size", "context_length")
NIAH_LENGTH_FIELDS = (
    "context_length",
    "target_context_tokens",
    "max_context_tokens",
    "length",
    "context_tokens",
)
NIAH_DEPTH_FIELDS = ("depth_percent", "needle_depth", "depth", "gold_depth")
DEPTH_BIN_FIELD = "gold_depth_bin"
SIZE_FIELDS = ("num_dicts", "num_keys", "num_docs", "num_records")


def secondary_metrics(groups: list[Group]) -> list[str]:
    """The secondary metrics the benchmark declared (metrics.json ``secondary_metrics``, written
    by the runner from the unit) that some run recorded and that are not its primary metric."""
    if not groups:
        return []
    runs = [r for g in groups for r in g.runs]
    declared = dict.fromkeys(m for r in runs for m in r.metrics.get("secondary_metrics") or ())
    return [
        m
        for m in declared
        if m != groups[0].metric and any(m in r.metrics["metrics"] for r in runs)
    ]


def extra_breakdowns(
    b: ReportBuilder, label: str, field_name: str, key: KeyFn | None = None
) -> list[Extra]:
    """One :class:`Extra` per secondary metric of ``label`` that has this breakdown."""
    out = []
    for metric in secondary_metrics(list(b.groups[label].values())):
        series, deltas, _ = b.breakdown(label, field_name, key=key, metric=metric)
        if series:
            out.append(Extra(metric, series, deltas))
    return out


def num_key(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def meta_key(field_name: str) -> KeyFn:
    def key(row: dict[str, Any]) -> str | None:
        value = (row.get("meta") or {}).get(field_name)
        return None if value is None else str(value)

    return key


def pick_field(groups: list[Group], candidates: tuple[str, ...]) -> str | None:
    """The first candidate any run breaks down by (metrics.json ``by``, else prediction meta)."""
    runs = [r for g in groups for r in g.runs]
    for name in candidates:
        if any(name in r.metrics.get("by", {}) for r in runs):
            return name
    for name in candidates:
        if any(name in (row.get("meta") or {}) for r in runs for row in (r.predictions or [])[:1]):
            return name
    return None


def distinct_keys(groups: list[Group], field_name: str) -> set[str]:
    """Values of one breakdown field over all runs (metrics.json ``by``, else predictions)."""
    keys: set[str] = set()
    for run in (r for g in groups for r in g.runs):
        by = run.metrics.get("by", {}).get(field_name)
        if isinstance(by, dict):
            keys.update(map(str, by))
        else:
            keys.update(k for k in map(meta_key(field_name), run.predictions or []) if k)
    return keys


def depth_bin(row: dict[str, Any]) -> str | None:
    """Gold depth in 10 bins ("0.0".."0.9"), from meta ``gold_depth`` or position / size."""
    meta = row.get("meta") or {}
    depth = meta.get("gold_depth")
    if not isinstance(depth, (int, float)):
        pos = meta.get("gold_position")
        size = next((meta[k] for k in SIZE_FIELDS if isinstance(meta.get(k), int)), None)
        if not isinstance(pos, int) or not size or size < 2:
            return None
        depth = pos / (size - 1)
    if not 0 <= depth <= 1:
        return None
    return str(round(min(int(depth * 10), 9) / 10, 6))  # lower edge, as gold_depth_bin has it


def position_section(b: ReportBuilder, label: str, title: str, what: str) -> str:
    groups = list(b.groups[label].values())
    if not any(r.metrics.get("by") for g in groups for r in g.runs):
        return ""  # no breakdown declared (e.g. MDQA closed-book/oracle): overall table only
    field_name = pick_field(groups, POSITION_FIELDS)
    if field_name is None:
        b.problems.append(f"{label}: no gold_position breakdown; no position plot")
        return ""
    # Many distinct positions (e.g. 85 dictionaries) give noisy points: show depth bins instead,
    # the benchmark's own gold_depth_bin breakdown if it has one, else bins of meta gold_depth.
    many = len(distinct_keys(groups, field_name)) > MAX_POSITIONS
    binned = many and pick_field(groups, (DEPTH_BIN_FIELD,)) is not None
    key: KeyFn | None = None
    if binned:
        field_name = DEPTH_BIN_FIELD
    elif (
        many
        and all(g.has_predictions for g in groups)
        and any(depth_bin(row) is not None for g in groups for row in g.runs[0].predictions or [])
    ):
        binned = True
        field_name, key = "gold depth (10 bins)", depth_bin
    series, deltas, keys = b.breakdown(label, field_name, key=key)
    if binned:
        edges = sorted(float(k) for k in keys)
        gaps = [hi - lo for lo, hi in zip(edges, edges[1:]) if hi > lo]
        width = min(gaps) if gaps else 1.0 - edges[0] if edges else 0.1
        x_of: Callable[[str], float] = lambda k: round(100 * (float(k) + width / 2), 6)  # noqa: E731
        show = lambda k: f"{100 * float(k):g}–{100 * (float(k) + width):g}%"  # noqa: E731
        xlabel = f"depth of the {what} in the context (%)"
    else:
        x_of = lambda k: float(k) + 1  # noqa: E731
        show = lambda k: str(int(float(k)) + 1)  # noqa: E731
        xlabel = f"position of the {what} (1 = first)"
    if not series:
        return ""
    extra = extra_breakdowns(b, label, field_name, key)
    start = len(b.notes.texts)
    metric = groups[0].metric
    panels = [b.plot_panel(label, f"{label}: {metric}" if extra else label, series, x_of)]
    panels += [b.plot_panel(label, f"{label}: {e.metric}", e.series, x_of) for e in extra]
    metrics = ", ".join([metric, *(e.metric for e in extra)])
    fig = plots.line_figure(
        panels,
        title=f"{title}: {metrics} by {what} position",
        xlabel=xlabel,
        ylabel=metric if not extra else "score",
        integer_x=not binned,
    )
    img = b.figure(f"{label}_by_position", fig, f"{title} ({label}) by {what} position")
    md, out = breakdown_table(
        label,
        "depth" if binned else "position (1-based)",
        keys,
        series,
        deltas,
        b.baseline,
        b.notes,
        show,
        metric=metric,
        extra=extra,
    )
    b.html_tables.append((f"{label} by position", md))
    link = b.csv(f"{label}_by_position", out)
    return (
        f"## {title} ({label}): accuracy by {what} position\n\n{img}\n{md.to_markdown()}"
        f"\n{b.notes_block(start)}\nCSV: [{link}]({link})\n"
    )


def flenqa_section(b: ReportBuilder) -> str:
    labels = b.labels("flenqa")
    if not labels:
        return ""
    # Without CoT first, then CoT: the paper shows both.
    labels.sort(key=lambda lb: ("cot" in re.split(r"[_\-.]", lb), lb))
    panels, blocks, start = [], [], len(b.notes.texts)
    metric = next(iter(b.groups[labels[0]].values())).metric
    for label in labels:
        field_name = pick_field(list(b.groups[label].values()), LENGTH_FIELDS)
        if field_name is None:
            b.problems.append(f"{label}: no ctx_size breakdown; no FLenQA length plot")
            continue
        series, deltas, keys = b.breakdown(label, field_name)
        if not series:
            continue
        cot = "cot" in re.split(r"[_\-.]", label)
        title = f"{label} ({'CoT' if cot else 'no CoT'})"
        extra = extra_breakdowns(b, label, field_name)
        panels.append(b.plot_panel(label, title, series, float))
        panels += [b.plot_panel(label, f"{title}: {e.metric}", e.series, float) for e in extra]
        md, out = breakdown_table(
            label,
            "context length (tokens)",
            keys,
            series,
            deltas,
            b.baseline,
            b.notes,
            metric=next(iter(b.groups[label].values())).metric,
            extra=extra,
        )
        b.html_tables.append((f"{label} by length", md))
        link = b.csv(f"{label}_by_length", out)
        blocks.append(f"### {label}\n\n{md.to_markdown()}\nCSV: [{link}]({link})\n")
    if not panels:
        return ""
    fig = plots.line_figure(
        panels,
        title=f"FLenQA: {metric} by context length",
        xlabel="context length (tokens)",
        ylabel=metric if len(panels) == len(blocks) else "score",  # "score": secondary panels
    )
    img = b.figure("flenqa_by_length", fig, "FLenQA accuracy by context length")
    return (
        "## FLenQA: accuracy by context length, with and without CoT\n\n"
        + img
        + "\n"
        + "\n".join(blocks)
        + "\n"
        + b.notes_block(start)
    )


def tokens_label(key: str) -> str:
    """A token count for people: 1000 and 1024 -> ``1K``, 131072 -> ``128K``, 1500 -> ``1.5K``.

    Round thousands first (128000 is "128K", not "125K"), then round binary thousands; anything
    else in thousands with one decimal. Non-numbers are shown as they are.
    """
    try:
        n = float(key)
    except ValueError:
        return key
    if n < 1000:
        return f"{n:g}"
    for unit in (1000, 1024):
        if n % unit == 0:
            return f"{n / unit:g}K"
    return f"{round(n / 1000, 1):g}K"


def depth_label(field_name: str, keys: list[str]) -> Callable[[str], str]:
    """Depth keys as percentages: ``*percent*`` fields (and any with values above 1) are
    percent already; other depth fields are fractions 0..1 of the context."""
    values = []
    for k in keys:
        try:
            values.append(float(k))
        except ValueError:
            return str
    scale = 1.0 if "percent" in field_name or any(v > 1 for v in values) else 100.0
    return lambda k: f"{round(float(k) * scale, 6):g}%"


def niah_section(b: ReportBuilder, label: str) -> str:
    groups = list(b.groups[label].values())
    length = pick_field(groups, NIAH_LENGTH_FIELDS)
    depth = pick_field(groups, NIAH_DEPTH_FIELDS)
    if length is None or depth is None or not all(g.has_predictions for g in groups):
        b.problems.append(
            f"{label}: the NIAH heatmap needs predictions.jsonl with a "
            "context length and a depth in each sample's meta; none drawn"
        )
        return ""
    parts = [f"## NIAH ({label}): {groups[0].metric} by context length × needle depth\n"]
    long = Table(["label", "variant", "length", "depth", "mean", "n_per_seed", "seeds", *DELTA_CSV])
    by_len, by_depth = meta_key(length), meta_key(depth)
    base = b.base_of(label)

    def cell(row: dict[str, Any]) -> str | None:
        d, n = by_depth(row), by_len(row)
        return None if d is None or n is None else f"{d}|{n}"

    for group in groups:
        cells: dict[tuple[str, str], list[float]] = {}
        sizes: dict[tuple[str, str], int] = {}
        for run in group.runs:
            acc: dict[tuple[str, str], list[float]] = {}
            for row in run.predictions or []:
                k = (by_depth(row), by_len(row))
                if None not in k and group.metric in row["scores"]:
                    # cast: `None not in k` has ruled out None
                    acc.setdefault(cast("tuple[str, str]", k), []).append(
                        float(row["scores"][group.metric])
                    )
            for k, vals in acc.items():
                cells.setdefault(k, []).append(sum(vals) / len(vals))
                sizes[k] = len(vals)
        seeds = len(group.runs)
        means = {k: sum(v) / len(v) for k, v in cells.items() if len(v) == seeds}
        rows = sorted({k[0] for k in means}, key=num_key)
        cols = sorted({k[1] for k in means}, key=num_key)
        grid = [[means.get((r, c)) for c in cols] for r in rows]
        show_depth = depth_label(depth, rows)
        fig = plots.heatmap_figure(
            grid,
            rows=[show_depth(r) for r in rows],
            cols=[tokens_label(c) for c in cols],
            title=f"NIAH {label}: {group.variant}",
            xlabel="Context length (tokens)",
            ylabel="Needle depth (% of context)",
            value_label=group.metric,
        )
        parts.append(
            b.figure(f"{label}_{group.variant}_heatmap", fig, f"NIAH {label} {group.variant}")
        )
        parts.append(
            f"**{group.variant}** ({seeds} seed{'s' * (seeds > 1)}):\n\n"
            + heatmap_table(rows, cols, means, show_depth, tokens_label).to_markdown()
        )
        for (r, c), m in sorted(means.items()):
            delta = None
            if base is not None and group is not base:
                delta = paired_delta(group, base, select=cell, want=f"{r}|{c}")
            long.rows.append(
                [label, group.variant, c, r, m, sizes[(r, c)], seeds, *delta_csv(delta)]
            )
    link = b.csv(f"{label}_heatmap", long)
    parts.append(f"CSV (with paired deltas per cell vs {b.baseline}): [{link}]({link})\n")
    return "\n".join(parts)


def general_section(b: ReportBuilder) -> str:
    labels = b.labels("general")
    blocks, start = [], len(b.notes.texts)
    for label in labels:
        variants = b.groups[label]
        base = b.base_of(label)
        names = list(
            dict.fromkeys(
                m for g in variants.values() for r in g.runs for m in r.metrics["metrics"]
            )
        )
        cells: dict[str, dict[str, Stat]] = {}
        deltas: dict[str, dict[str, Delta]] = {}
        for variant, group in variants.items():
            cells[variant] = {
                m: overall(group, m)
                for m in names
                if all(m in r.metrics["metrics"] for r in group.runs)
            }
            if base is not None and group is not base:
                deltas[variant] = {m: general_delta(group, base, m, cells) for m in cells[variant]}
        md, out = general_table(names, cells, deltas, b.baseline, b.notes)
        b.html_tables.append((f"{label}: general benchmarks", md))
        link = b.csv(f"{label}_scores", out)
        caveats: dict[str, str] = {}
        for run in (r for g in variants.values() for r in g.runs):
            found = run.metrics.get("caveats")
            caveats.update(found if isinstance(found, dict) else {})
        notes = "".join(f"* {task}: {text}\n" for task, text in caveats.items())
        notes = f"\nNot directly comparable with the paper's numbers:\n\n{notes}" if notes else ""
        head = f"### {label}\n\n" if len(labels) > 1 else ""
        blocks.append(f"{head}{md.to_markdown()}{notes}\nCSV: [{link}]({link})\n")
    if not blocks:
        return ""
    return (
        "## General benchmarks (lm-evaluation-harness)\n\n"
        + "\n".join(blocks)
        + "\n"
        + b.notes_block(start)
    )


def general_delta(
    group: Group, base: Group, metric: str, cells: dict[str, dict[str, Stat]]
) -> Delta:
    """Paired when per-sample scores exist; else a labelled unpaired difference."""
    a, _ = seed_scores(group, metric)
    b, _ = seed_scores(base, metric)
    if a or b:
        return paired_delta(group, base, metric)
    if metric not in cells.get(base.variant, {}):
        return Delta(None, note=f"{base.variant} has no {metric}")
    mine, theirs = cells[group.variant][metric], cells[base.variant][metric]
    if mine.n != theirs.n or mine.n is None:
        return Delta(
            None, note=f"{metric}: sample counts differ ({mine.n} vs {theirs.n}); no delta"
        )
    return Delta(
        mine.mean - theirs.mean,
        n=mine.n,
        note="no per-sample scores: unpaired difference of means, no CI",
    )


def other_breakdowns(b: ReportBuilder) -> str:
    """Every other metrics.json breakdown as CSV (e.g. FLenQA by task or dispersion)."""
    shown = {
        *POSITION_FIELDS,
        *LENGTH_FIELDS,
        *NIAH_LENGTH_FIELDS,
        *NIAH_DEPTH_FIELDS,
        DEPTH_BIN_FIELD,
    }
    links = []
    for label, variants in b.groups.items():
        fields = list(
            dict.fromkeys(
                f
                for g in variants.values()
                for r in g.runs
                for f in r.metrics.get("by", {})
                if f not in shown
            )
        )
        for field_name in fields:
            series, deltas, keys = b.breakdown(label, field_name)
            if not series:
                continue
            metric = next(iter(variants.values())).metric
            _, out = breakdown_table(
                label, field_name, keys, series, deltas, b.baseline, Notes(), metric=metric
            )
            link = b.csv(f"{label}_by_{field_name}", out)
            links.append(f"* {label} by {field_name}: [{link}]({link})\n")
    return "## Other breakdowns (CSV)\n\n" + "".join(links) if links else ""


def training_section(b: ReportBuilder) -> str:
    runs = b.found.training
    if not runs:
        return ""
    table = Table(["variant", "seed", "backend", "model", "adapter", "final loss", "folder"])
    series = []
    for t in runs:
        m = t.model
        final = f"{t.loss[-1][1]:.4f}" if t.loss else "no log found"
        table.rows.append(
            [
                t.variant,
                t.seed or "",
                m.get("backend", "?"),
                m.get("path") or m.get("model") or "?",
                m.get("adapter") or "",
                final,
                f"`{t.path}`",
            ]
        )
        if t.loss:
            name = t.variant + (f" seed {t.seed}" if t.seed is not None else "")
            series.append(
                plots.Series(name, tuple(s for s, _ in t.loss), tuple(v for _, v in t.loss))
            )
    img = b.figure("training_loss", plots.loss_figure(series), "Training loss") if series else ""
    return f"## Training runs\n\n{table.to_markdown()}\n{img}"


def pairwise_section(b: ReportBuilder) -> str:
    """Paired deltas between non-baseline variants (e.g. template vs no template)."""
    start = len(b.notes.texts)
    md = Table(["benchmark", "variant", "vs", "Δ [95% CI]"])
    out = Table(["label", "variant", "vs", "metric", *DELTA_CSV])
    for label, variants in b.groups.items():
        others = [g for v, g in variants.items() if v != b.baseline]
        for i, first in enumerate(others):
            for second in others[i + 1 :]:
                delta = paired_delta(first, second)
                md.rows.append([label, first.variant, second.variant, fmt_delta(delta, b.notes)])
                out.rows.append(
                    [label, first.variant, second.variant, first.metric, *delta_csv(delta)]
                )
    if not md.rows:
        return ""
    link = b.csv("pairwise", out)
    return (
        "## Pairwise deltas between variants (primary metric)\n\n"
        f"{md.to_markdown()}\n{b.notes_block(start)}\nCSV: [{link}]({link})\n"
    )


def comparison_columns(b: ReportBuilder) -> list[tuple[str, str]]:
    """(benchmark label, metric) columns of the comparison table: each benchmark's primary and
    declared secondary metrics; for a general suite each task's score and, for closed-book
    tasks, its wrong-answer and abstention rates."""
    cols: list[tuple[str, str]] = []
    for label, variants in b.groups.items():
        groups = list(variants.values())
        runs = [r for g in groups for r in g.runs]
        recorded = set.intersection(*(set(r.metrics["metrics"]) for r in runs))
        if groups[0].benchmark == "general":
            tasks = runs[0].metrics.get("tasks") or {}
            for key, task in tasks.items():
                for name in (task.get("primary_metric"), f"{key}/wrong_answer", f"{key}/abstained"):
                    if name in recorded:
                        cols.append((label, name))
            continue
        for name in (groups[0].metric, *secondary_metrics(groups)):
            if name in recorded:
                cols.append((label, name))
    return cols


def comparison_section(b: ReportBuilder) -> str:
    """The paper's Table 2 layout: one row per finetuning variant, one column per benchmark
    score, each cell the score and its paired delta vs the baseline (95% CI)."""
    if not b.baseline:
        return ""
    variants = list(dict.fromkeys(v for vs in b.groups.values() for v in vs))
    if len(variants) < 3 or len(b.groups) < 2:
        return ""  # one finetuned model: the overall table says it all
    cols = comparison_columns(b)
    if not cols:
        return ""
    start = len(b.notes.texts)
    md = Table(["finetuning data", *(f"{label}: {metric}" for label, metric in cols)])
    out = Table(["variant", "benchmark", "metric", "mean", "ci_low", "ci_high", "delta",
                 "delta_ci_low", "delta_ci_high"])  # fmt: skip
    ordered = [b.baseline, *(v for v in variants if v != b.baseline)]
    for variant in ordered:
        cells = []
        for label, metric in cols:
            group = b.groups[label].get(variant)
            if group is None or not all(metric in r.metrics["metrics"] for r in group.runs):
                cells.append(DASH)
                continue
            stat = overall(group, metric)
            base = b.base_of(label)
            delta = None
            if base is not None and group is not base:
                delta = (
                    general_delta(group, base, metric, {})
                    if group.benchmark == "general" and not seed_scores(group, metric)[0]
                    else paired_delta(group, base, metric)
                )
            text = fmt(stat.mean)
            if delta is not None:
                text += f" ({fmt_delta(delta, b.notes)})"
            cells.append(text)
            out.rows.append(
                [variant, label, metric, stat.mean, stat.ci_low, stat.ci_high,
                 *((delta.delta, delta.ci_low, delta.ci_high) if delta else (None,) * 3)]
            )  # fmt: skip
        md.rows.append([variant, *cells])
    b.html_tables.append(("Finetuning data x benchmark", md))
    link = b.csv("comparison", out)
    return (
        "## Finetuning data × benchmark (the paper's Table 2 layout)\n\n"
        f"Each cell: the score, then in parentheses the paired difference from "
        f"**{b.baseline}** with its 95% CI. Wrong-answer, unsupported-answer and abstention "
        "rates measure hallucination directly (lower wrong/unsupported is better).\n\n"
        f"{md.to_markdown()}\n{b.notes_block(start)}\nCSV: [{link}]({link})\n"
    )
