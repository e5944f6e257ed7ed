"""Report sections drawn from what each benchmark declares (records.Figure in metrics.json):
a line over a breakdown, a heatmap over two, a table of scores; then other breakdowns and
training runs. Nothing here names a benchmark.

Each section function takes the :class:`~needlework.reporting.report.ReportBuilder` (which owns
the output folder, the footnotes and the baseline) and returns its markdown ('' when there is
nothing to show, with the reason added to the report's problems).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

from needlework.records import Figure, Prediction
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
    fmt_stat,
    general_table,
    heatmap_table,
)

if TYPE_CHECKING:
    from needlework.reporting.report import ReportBuilder

MAX_POSITIONS = 20  # above this many gold positions, results are shown in 10 depth bins


def secondary_metrics(groups: list[Group]) -> list[str]:
    """The secondary metrics the benchmark declared (metrics.json ``secondary_metrics``, written
    by the runner from the unit) that some run recorded and that are not its primary metric."""
    if not groups:
        return []
    runs = [r for g in groups for r in g.runs]
    declared = dict.fromkeys(m for r in runs for m in r.metrics.secondary_metrics)
    return [
        m for m in declared if m != groups[0].metric and any(m in r.metrics.metrics for r in runs)
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
    def key(row: Prediction) -> str | None:
        value = row.meta.get(field_name)
        return None if value is None else str(value)

    return key


def distinct_keys(groups: list[Group], field_name: str, key: KeyFn | None = None) -> set[str]:
    """Values of one breakdown over all runs (metrics.json ``by``, else predictions; ``key``
    computes them from predictions)."""
    keys: set[str] = set()
    for run in (r for g in groups for r in g.runs):
        by = None if key else run.metrics.by.get(field_name)
        if by is not None:
            keys.update(by)
        else:
            keys.update(k for k in map(key or meta_key(field_name), run.predictions or []) if k)
    return keys


def depth_bin(x: str, size: str) -> KeyFn:
    """Gold depth in 10 bins ("0.0".."0.9") from meta ``gold_depth``, else position ``x`` over
    the number of positions ``size``; the lower edge, as a benchmark's gold_depth_bin has it."""

    def key(row: Prediction) -> str | None:
        meta = row.meta
        depth = meta.get("gold_depth")
        if not isinstance(depth, (int, float)):
            pos, n = meta.get(x), meta.get(size) if size else None
            if not isinstance(pos, int) or not isinstance(n, int) or n < 2:
                return None
            depth = pos / (n - 1)
        if not 0 <= depth <= 1:
            return None
        return str(round(min(int(depth * 10), 9) / 10, 6))

    return key


def has_breakdown(groups: list[Group], field_name: str) -> bool:
    """Some run breaks down by ``field_name`` (metrics.json ``by``, else prediction meta)."""
    runs = [r for g in groups for r in g.runs]
    return any(field_name in r.metrics.by for r in runs) or any(
        field_name in row.meta for r in runs for row in (r.predictions or [])[:1]
    )


@dataclass
class Axis:
    """A line figure's x axis for one label: the breakdown shown and how its keys read."""

    field: str
    key: KeyFn | None
    x_of: Callable[[str], float]
    show: Callable[[str], str]
    xlabel: str
    column: str
    integer_x: bool
    ticks: dict[float, str] | None = None
    """Category names by x position, for breakdowns whose values are not numbers."""


def line_axis(fig: Figure, groups: list[Group]) -> Axis:
    """The x axis of a line figure; a ``position`` axis with more than 20 positions turns into
    10 depth bins (the benchmark's ``bins`` breakdown, else computed from meta)."""
    if fig.x_axis != "position":
        xlabel = fig.xlabel or fig.x
        keys = sorted(distinct_keys(groups, fig.x), key=num_key)
        show = axis_label(fig.x_axis, fig.x, keys)
        if all(num_key(k)[0] == 0 for k in keys):
            return Axis(fig.x, None, float, show, xlabel, xlabel, True)
        at = {k: float(i) for i, k in enumerate(keys, 1)}  # categories: 1, 2, ... in name order
        ticks = {x: show(k) for k, x in at.items()}
        return Axis(fig.x, None, at.__getitem__, show, xlabel, xlabel, True, ticks)
    many = len(distinct_keys(groups, fig.x)) > MAX_POSITIONS
    field_name, key = fig.x, None
    binned = many and bool(fig.bins) and has_breakdown(groups, fig.bins)
    if binned:
        field_name = fig.bins
    elif many and all(g.has_predictions for g in groups):
        computed = depth_bin(fig.x, fig.size)
        if any(computed(row) is not None for g in groups for row in g.runs[0].predictions or []):
            binned, field_name, key = True, "gold depth (10 bins)", computed
    if not binned:
        return Axis(
            field_name,
            None,
            lambda k: float(k) + 1,
            axis_label("position", fig.x, []),
            fig.xlabel or f"position of the {fig.what} (1 = first)",
            "position (1-based)",
            True,
        )
    edges = sorted(float(k) for k in distinct_keys(groups, field_name, key))
    gaps = [hi - lo for lo, hi in zip(edges, edges[1:]) if hi > lo]
    width = min(gaps) if gaps else 1.0 - edges[0] if edges else 0.1
    return Axis(
        field_name,
        key,
        lambda k: round(100 * (float(k) + width / 2), 6),
        lambda k: f"{100 * float(k):g}–{100 * (float(k) + width):g}%",
        f"depth of the {fig.what} in the context (%)",
        "depth",
        False,
    )


def line_section(b: ReportBuilder, items: list[tuple[str, Figure]]) -> str:
    """One figure (a panel per label and secondary metric), a table and CSV per label; the
    first label's declaration gives the section's texts, each label's its panel title."""
    fig = items[0][1]
    panels, blocks, start, extras = [], [], len(b.notes.texts), False
    metric, axis = "", None
    for label, own in items:
        groups = list(b.groups[label].values())
        if not has_breakdown(groups, fig.x):
            if any(r.metrics.by for g in groups for r in g.runs):
                b.problems.append(f"{label}: no {fig.x} breakdown; no {fig.name} plot")
            continue
        axis = line_axis(fig, groups)
        series, deltas, keys = b.breakdown(label, axis.field, key=axis.key)
        if not series:
            continue
        metric = groups[0].metric
        extra = extra_breakdowns(b, label, axis.field, axis.key)
        extras = extras or bool(extra)
        base = f"{label} ({own.panel})" if own.panel else label
        first = base if own.panel or not extra else f"{base}: {metric}"
        panels.append(b.plot_panel(label, first, series, axis.x_of))
        panels += [b.plot_panel(label, f"{base}: {e.metric}", e.series, axis.x_of) for e in extra]
        md, out = breakdown_table(
            label,
            axis.column,
            keys,
            series,
            deltas,
            b.baseline,
            b.notes,
            axis.show,
            metric=metric,
            extra=extra,
        )
        b.html_tables.append((f"{label} {fig.name.replace('_', ' ')}", md))
        link = b.csv(f"{label}_{fig.name}", out)
        if fig.shared:
            blocks.append(f"### {label}\n\n{md.to_markdown()}\nCSV: [{link}]({link})\n")
        else:  # one label: its footnotes right under its table
            notes = b.notes.to_markdown(start)
            blocks.append(f"{md.to_markdown()}\n{notes}\nCSV: [{link}]({link})\n")
        metrics = ", ".join([metric, *(e.metric for e in extra)])
    if not panels or axis is None:
        return ""
    values = {"label": items[0][0], "metric": metric, "metrics": metrics}
    plotted = plots.line_figure(
        panels,
        title=fig.text(fig.title or fig.heading, **values),
        xlabel=axis.xlabel,
        ylabel="score" if extras else metric,
        integer_x=axis.integer_x,
        xticks=axis.ticks,
    )
    img = b.figure(
        fig.shared or f"{items[0][0]}_{fig.name}", plotted, fig.text(fig.caption, **values)
    )
    notes = "\n" + b.notes.to_markdown(start) if fig.shared else ""
    return f"## {fig.text(fig.heading, **values)}\n\n{img}\n" + "\n".join(blocks) + notes


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
    try:
        values = [float(k) for k in keys]
    except ValueError:
        return str
    scale = 1.0 if "percent" in field_name or any(v > 1 for v in values) else 100.0
    return lambda k: f"{round(float(k) * scale, 6):g}%"


def heatmap_section(b: ReportBuilder, items: list[tuple[str, Figure]]) -> str:
    """A ``y`` × ``x`` grid per variant (one figure each) with per-cell paired deltas in a CSV."""
    return "\n".join(filter(None, (one_heatmap(b, fig, label) for label, fig in items)))


def axis_label(axis: str, field_name: str, keys: list[str]) -> Callable[[str], str]:
    if axis == "tokens":
        return tokens_label
    if axis == "depth":
        return depth_label(field_name, keys)
    if axis == "position":
        return lambda k: str(int(float(k)) + 1)
    return str


def one_heatmap(b: ReportBuilder, fig: Figure, label: str) -> str:
    groups = list(b.groups[label].values())
    length, depth = fig.x, fig.y
    if not all(g.has_predictions for g in groups) or not all(
        has_breakdown(groups, f) for f in (length, depth)
    ):
        b.problems.append(
            f"{label}: the {depth} × {length} heatmap needs predictions.jsonl with "
            f"'{length}' and '{depth}' in each sample's meta; none drawn"
        )
        return ""
    values = {"label": label, "metric": groups[0].metric}
    parts = [f"## {fig.text(fig.heading, **values)}\n"]
    long = Table(["label", "variant", "length", "depth", "mean", "n_per_seed", "seeds", *DELTA_CSV])
    by_len, by_depth = meta_key(length), meta_key(depth)
    base = b.base_of(label)

    def cell(row: Prediction) -> str | None:
        d, n = by_depth(row), by_len(row)
        return None if d is None or n is None else f"{d}|{n}"

    for group in groups:
        cells: dict[tuple[str, str], list[float]] = {}
        sizes: dict[tuple[str, str], int] = {}
        for run in group.runs:
            acc: dict[tuple[str, str], list[float]] = {}
            for row in run.predictions or []:
                d, n = by_depth(row), by_len(row)
                if d is not None and n is not None and group.metric in row.scores:
                    acc.setdefault((d, n), []).append(row.scores[group.metric])
            for k, vals in acc.items():
                cells.setdefault(k, []).append(sum(vals) / len(vals))
                sizes[k] = len(vals)
        seeds = len(group.runs)
        means = {k: sum(v) / len(v) for k, v in cells.items() if len(v) == seeds}
        rows = sorted({k[0] for k in means}, key=num_key)
        cols = sorted({k[1] for k in means}, key=num_key)
        grid = [[means.get((r, c)) for c in cols] for r in rows]
        show_depth = axis_label(fig.y_axis, depth, rows)
        show_len = axis_label(fig.x_axis, length, cols)
        named = {**values, "variant": group.variant}
        plotted = plots.heatmap_figure(
            grid,
            rows=[show_depth(r) for r in rows],
            cols=[show_len(c) for c in cols],
            title=fig.text(fig.title or fig.heading, **named),
            xlabel=fig.xlabel or length,
            ylabel=fig.ylabel or depth,
            value_label=group.metric,
        )
        parts.append(
            b.figure(f"{label}_{group.variant}_{fig.name}", plotted, fig.text(fig.caption, **named))
        )
        parts.append(
            f"**{group.variant}** ({seeds} seed{'s' * (seeds > 1)}):\n\n"
            + heatmap_table(rows, cols, means, show_depth, show_len).to_markdown()
        )
        for (r, c), m in sorted(means.items()):
            delta = None
            if base is not None and group is not base:
                delta = paired_delta(group, base, select=cell, want=f"{r}|{c}")
            long.rows.append(
                [label, group.variant, c, r, m, sizes[(r, c)], seeds, *delta_csv(delta)]
            )
    link = b.csv(f"{label}_{fig.name}", long)
    parts.append(f"CSV (with paired deltas per cell vs {b.baseline}): [{link}]({link})\n")
    return "\n".join(parts)


def scores_section(b: ReportBuilder, items: list[tuple[str, Figure]]) -> str:
    """Every recorded score per variant (a suite's tasks), with deltas and caveats."""
    fig, labels = items[0][1], [label for label, _ in items]
    blocks, start = [], len(b.notes.texts)
    for label in labels:
        variants = b.groups[label]
        base = b.base_of(label)
        names = list(
            dict.fromkeys(m for g in variants.values() for r in g.runs for m in r.metrics.metrics)
        )
        cells: dict[str, dict[str, Stat]] = {}
        deltas: dict[str, dict[str, Delta]] = {}
        for variant, group in variants.items():
            cells[variant] = {m: overall(group, m) for m in names if group.has(m)}
            if base is not None and group is not base:
                deltas[variant] = {m: general_delta(group, base, m) for m in cells[variant]}
        md, out = general_table(names, cells, deltas, b.baseline, b.notes)
        b.html_tables.append((f"{label}: every score", md))
        link = b.csv(f"{label}_{fig.name}", out)
        caveats: dict[str, str] = {}
        for run in (r for g in variants.values() for r in g.runs):
            caveats.update(run.metrics.caveats)
        notes = "".join(f"* {task}: {text}\n" for task, text in caveats.items())
        notes = f"\nNot directly comparable with the paper's numbers:\n\n{notes}" if notes else ""
        head = f"### {label}\n\n" if len(labels) > 1 else ""
        blocks.append(f"{head}{md.to_markdown()}{notes}\nCSV: [{link}]({link})\n")
    if not blocks:
        return ""
    return (
        f"## {fig.text(fig.heading, label=labels[0])}\n\n"
        + "\n".join(blocks)
        + "\n"
        + b.notes.to_markdown(start)
    )


def general_delta(group: Group, base: Group, metric: str) -> Delta:
    """Paired when per-sample scores exist; else a labelled unpaired difference of the
    recorded means (a suite's aggregate-only task)."""
    a, _ = seed_scores(group, metric)
    b, _ = seed_scores(base, metric)
    if a or b:
        return paired_delta(group, base, metric)
    if not base.has(metric):
        return Delta(None, note=f"{base.variant} has no {metric}")
    mine, theirs = overall(group, metric), overall(base, metric)
    if mine.n != theirs.n or mine.n is None:
        why = f"{metric}: sample counts differ ({mine.n} vs {theirs.n}); no delta"
        return Delta(None, note=why)
    why = "no per-sample scores: unpaired difference of means, no CI"
    return Delta(mine.mean - theirs.mean, n=mine.n, note=why)


def other_breakdowns(b: ReportBuilder) -> str:
    """Every breakdown no figure showed, as CSV (e.g. FLenQA by task or dispersion)."""
    links = []
    for label, variants in b.groups.items():
        shown = {f for fig in b.declared(label) for f in (fig.x, fig.y, fig.bins)}
        fields = list(
            dict.fromkeys(
                f for g in variants.values() for r in g.runs for f in r.metrics.by if f not in shown
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


def cells_section(b: ReportBuilder) -> str:
    """``--cells``: each variant's primary score in every combination of the given fields (for
    FLenQA task x ctx_size x dispersion) beside the baseline's, and their difference. Unpaired:
    the two sides may hold different samples (official vs re-created rows), so the CI is
    :func:`stats.unpaired_difference`'s, not the paired bootstrap of the other sections."""
    from needlework.stats import unpaired_difference

    if not b.cells:
        return ""

    def cell_of(row: Prediction) -> str | None:
        values = [row.meta.get(f) for f in b.cells]
        return None if None in values else " / ".join(map(str, values))

    name = " / ".join(b.cells)
    md = Table([name, "variant", "n", "score", "baseline n", "baseline", "Δ [95% CI]"])
    out = Table(["label", name, "variant", "n", "mean", "base_n", "base_mean", *DELTA_CSV[:3]])
    lines = []
    for label, variants in b.groups.items():
        base = b.base_of(label)
        if base is None:
            continue
        ref = _cell_scores(base, cell_of)
        for variant, group in variants.items():
            if group is base:
                continue
            got = _cell_scores(group, cell_of)
            shared = sorted(set(got) & set(ref), key=lambda c: [num_key(p) for p in c.split(" / ")])
            diffs = [unpaired_difference(got[cell], ref[cell]) for cell in shared]
            for cell, (d, lo, hi) in zip(shared, diffs):
                x, y = fmean(got[cell]), fmean(ref[cell])
                ci = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                md.rows.append([f"{label}: {cell}", variant, len(got[cell]), fmt(x)])
                md.rows[-1] += [len(ref[cell]), fmt(y), ci]
                out.rows.append(
                    [label, cell, variant, len(got[cell]), x, len(ref[cell]), y, d, lo, hi]
                )
            lines.append(
                f"* {label}, {variant} vs {base.variant}: {len(shared)} cells in both "
                f"({len(set(got) ^ set(ref))} in one only), mean |Δ| "
                f"{fmt(fmean(abs(d) for d, _, _ in diffs) if diffs else None)}, 95% CI "
                f"excludes 0 in {sum(not lo <= 0 <= hi for _, lo, hi in diffs)}\n"
            )
    if not md.rows:
        b.problems.append(
            f"--cells {','.join(b.cells)}: no variant shares such cells with a baseline"
        )
        return ""
    link = b.csv("cells", out)
    head = f"## Cell by cell: {name} (unpaired)\n\n{''.join(lines)}\n"
    return f"{head}{md.to_markdown()}\nCSV: [{link}]({link})\n"


def _cell_scores(group: Group, cell_of: KeyFn) -> dict[str, list[float]]:
    """Per-sample primary scores of every seed of ``group``, by cell."""
    out: dict[str, list[float]] = {}
    for run in group.runs:
        for row in run.predictions or []:
            cell = cell_of(row)
            if cell is not None and group.metric in row.scores:
                out.setdefault(cell, []).append(row.scores[group.metric])
    return out


def training_section(b: ReportBuilder) -> str:
    runs = b.found.training
    if not runs:
        return ""
    table = Table(["variant", "seed", "backend", "model", "adapter", "final loss", "folder"])
    series = []
    for t in runs:
        m = t.model
        final = f"{t.loss[-1][1]:.4f}" if t.loss else "no log found"
        where = (m.path or m.model if m else None) or "?"
        adapter = (m.adapter if m else None) or ""
        table.rows.append(
            [t.variant, t.seed or "", m.backend if m else "?", where, adapter, final, f"`{t.path}`"]
        )
        if t.loss:
            name = t.variant + (f" seed {t.seed}" if t.seed is not None else "")
            steps, losses = zip(*t.loss)
            series.append(plots.Series(name, steps, losses))
    img = b.figure("training_loss", plots.loss_figure(series), "Training loss") if series else ""
    return f"## Training runs\n\n{table.to_markdown()}\n{img}"


PER_RUN_FIELDS = ("out_dir", "variant", "seed")
"""Training-config fields that differ between any two runs and say nothing about the setup."""


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        out |= _flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


def swept_setting(b: ReportBuilder) -> tuple[str, dict[str, float]] | None:
    """The one numeric training setting the finetuned variants differ in (a learning-rate,
    step or mix-ratio sweep): its dotted config key and each variant's value, when at least
    three evaluated variants have resolved training configs that differ in exactly that key
    (seeds, run folders and labels aside). Anything else is not a sweep: None."""
    evaluated = {v for vs in b.groups.values() for v in vs if v != b.baseline}
    configs: dict[str, dict[str, Any]] = {}
    for run in b.found.training:
        if run.variant in evaluated and run.config and run.variant not in configs:
            flat = _flat(run.config)
            configs[run.variant] = {k: v for k, v in flat.items() if k not in PER_RUN_FIELDS}
    if len(configs) < 3:
        return None
    keys = sorted(set().union(*configs.values()))
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    if len(differ) != 1:
        return None
    values = {v: c.get(differ[0]) for v, c in configs.items()}
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values.values()):
        return None
    return differ[0], {v: float(x) for v, x in values.items()}  # type: ignore[arg-type]


def setting_section(b: ReportBuilder) -> str:
    """Every benchmark score against the swept training setting (:func:`swept_setting`), with
    the baseline as a flat reference line: the figure a ratio or learning-rate sweep is run for."""
    swept = swept_setting(b)
    if swept is None:
        return ""
    key, values = swept
    order = sorted(values, key=lambda v: (values[v], v))
    cols = comparison_columns(b)
    start = len(b.notes.texts)
    md = Table([key, "variant", *(f"{label}: {metric}" for label, metric in cols)])
    out = Table(["setting", "value", "variant", "benchmark", "metric", "mean", "ci_low",
                 "ci_high", *DELTA_CSV])  # fmt: skip
    stats: dict[tuple[str, str], dict[str, Stat]] = {}
    for variant in order:
        cells, found = score_row(b, variant, cols, fmt_stat)
        for label, metric, stat, delta in found:
            stats.setdefault((label, metric), {})[variant] = stat
            out.rows.append(
                [key, values[variant], variant, label, metric, stat.mean, stat.ci_low,
                 stat.ci_high, *delta_csv(delta)]
            )  # fmt: skip
        md.rows.append([f"{values[variant]:g}", variant, *cells])
    if not stats:
        return ""
    panels = []
    for label in dict.fromkeys(label for label, _ in cols):
        lines = []
        for (lb, metric), by_variant in stats.items():
            if lb != label:
                continue
            vs = [v for v in order if v in by_variant]
            xs = tuple(values[v] for v in vs)
            st = [by_variant[v] for v in vs]
            lo, hi = tuple(s.ci_low for s in st), tuple(s.ci_high for s in st)
            lines.append(plots.Series(metric, xs, tuple(s.mean for s in st), lo, hi))
            base = b.base_of(label)
            if base is not None and base.has(metric):
                flat = overall(base, metric).mean
                ys = (flat, flat) if len(xs) == 1 else tuple(flat for _ in xs)
                lines.append(plots.Series(f"{metric} ({b.baseline})", xs or (0.0,), ys))
        if lines:
            panels.append(plots.Panel(label, tuple(lines)))
    link = b.csv(f"scores_vs_{key}", out)
    caption = f"Scores against {key}"
    fig = plots.line_figure(
        panels, title=caption, xlabel=key, ylabel="score", integer_x=len(values) <= 25
    )
    img = b.figure(f"scores_vs_{key}", fig, caption)
    b.html_tables.append((caption, md))
    base_txt = f"; flat lines: **{b.baseline}**" if b.baseline else ""
    return (
        f"## {caption}\n\n"
        f"The finetuned variants' training configs differ only in `{key}` (seeds and run "
        f"folders aside), so each score is drawn against it (bands: 95% CIs{base_txt}). "
        "Cells: score [95% CI] (paired Δ vs the baseline).\n\n"
        f"{md.to_markdown()}\n{b.notes.to_markdown(start)}\n{img}\nCSV: [{link}]({link})\n"
    )


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
        f"{md.to_markdown()}\n{b.notes.to_markdown(start)}\nCSV: [{link}]({link})\n"
    )


def comparison_columns(b: ReportBuilder) -> list[tuple[str, str]]:
    """(benchmark label, metric) columns of the comparison table: each benchmark's primary and
    declared secondary metrics; for a general suite each task's score and, for closed-book
    tasks, its wrong-answer and abstention rates."""
    cols: list[tuple[str, str]] = []
    for label, variants in b.groups.items():
        groups = list(variants.values())
        runs = [r for g in groups for r in g.runs]
        recorded = set.intersection(*(set(r.metrics.metrics) for r in runs))
        tasks = runs[0].metrics.tasks
        if tasks:  # a suite: each task's score and its closed-book rates
            for key, task in tasks.items():
                for name in (task.primary_metric, f"{key}/wrong_answer", f"{key}/abstained"):
                    if name in recorded:
                        cols.append((label, name))
            continue
        for name in (groups[0].metric, *secondary_metrics(groups)):
            if name in recorded:
                cols.append((label, name))
    return cols


def column_delta(b: ReportBuilder, label: str, group: Group, metric: str) -> Delta | None:
    """``group`` vs the baseline on one (label, metric) column: paired where per-sample scores
    exist, else (a suite's aggregate-only task) the labelled unpaired difference."""
    base = b.base_of(label)
    if base is None or group is base:
        return None
    if group.runs[0].metrics.tasks and not seed_scores(group, metric)[0]:
        return general_delta(group, base, metric)
    return paired_delta(group, base, metric)


def score_row(
    b: ReportBuilder, variant: str, cols: list[tuple[str, str]], text: Callable[[Stat], str]
) -> tuple[list[str], list[tuple[str, str, Stat, Delta | None]]]:
    """A table row for ``variant``: per column ``text(score)`` and its paired Δ vs the baseline
    (a dash where the score is missing), and the ``(label, metric, score, Δ)`` found."""
    cells: list[str] = []
    found: list[tuple[str, str, Stat, Delta | None]] = []
    for label, metric in cols:
        group = b.groups[label].get(variant)
        if group is None or not group.has(metric):
            cells.append(DASH)
            continue
        stat, delta = overall(group, metric), column_delta(b, label, group, metric)
        cells.append(text(stat) + (f" ({fmt_delta(delta, b.notes)})" if delta else ""))
        found.append((label, metric, stat, delta))
    return cells, found


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
        cells, found = score_row(b, variant, cols, lambda stat: fmt(stat.mean))
        for label, metric, stat, delta in found:
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
        f"{md.to_markdown()}\n{b.notes.to_markdown(start)}\nCSV: [{link}]({link})\n"
    )
