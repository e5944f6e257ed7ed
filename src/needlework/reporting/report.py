"""``needlework report``: compare run folders in one markdown report with CSV tables and PNG plots.

Run:  needlework report runs/base runs/ft --out report/ [--baseline base] [--html]

Layout of ``<out>/``: ``report.md`` (the report), ``tables/*.csv`` (every number in it, long
format), ``figures/*.png`` and, with ``--html``, ``report.html`` (self-contained, with samples).
The folder is built in a hidden staging folder beside ``<out>`` and renamed into place when
complete (as ``needlework generate`` writes datasets), so a failed report leaves no partial
output; an existing ``<out>`` is replaced only when it holds nothing but an earlier report.
Each benchmark declares its figures and where its sections go (``figures()``/``report_rank``,
recorded in metrics.json), which gives the paper's figures (Xiong et al., ICLR 2025, arXiv
2406.19292): MDQA and KV retrieval by gold position, FLenQA by context length with and without
CoT, the NIAH length × depth grid, and general-benchmark scores with deltas vs the base model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from needlework.errors import UserError
from needlework.io import check_creatable, staged_dir, write_text
from needlework.records import Figure
from needlework.reporting import plots, sections
from needlework.reporting.compare import (
    Delta,
    Group,
    KeyFn,
    Stat,
    breakdown_from_metrics,
    breakdown_from_predictions,
    check_groups,
    group_runs,
    overall,
    paired_delta,
    prompt_conflict,
    with_seed_cis,
)
from needlework.reporting.runs import Discovery, EvalRun, discover
from needlework.reporting.sections import meta_key, num_key, secondary_metrics
from needlework.reporting.tables import (
    Notes,
    Row,
    Table,
    fmt_delta,
    fmt_stat,
    overall_table,
    runs_table,
)

READING_GUIDE = """\
## How to read this report

* **score**: the benchmark's primary metric averaged over samples (0–1; MDQA `best_subspan_em`,
  FLenQA/KV/NIAH exact or substring match as the benchmark defines). Brackets: 95% confidence
  interval (Wilson for 0/1 scores, bootstrap otherwise).
* **Seeds**: variants trained with several seeds show the mean over seeds, the seed range
  (`3 seeds 0.51–0.55`) and, where all seeds scored the same samples, a 95% CI over per-sample
  scores averaged across seeds. In plots, shaded bands are these 95% CIs (the min–max over seeds
  where seeds scored different samples); each model has its own marker and line style, and
  markers are shifted slightly sideways so identical results do not hide each other.
* **Secondary metrics**: where a benchmark also measures whether the answer followed the
  expected format (KV retrieval `format_match`), that score is shown beside the primary one: extra
  rows in the overall table, extra columns in the breakdown tables and an extra figure panel.
* **Δ**: variant − baseline on exactly the same samples (aligned by sample id), with a paired
  bootstrap 95% CI. If a CI excludes 0 the difference is unlikely to be sampling noise. A `—` with a
  note means no honest delta exists (different samples, missing predictions).
"""


@dataclass
class ReportResult:
    path: Path
    """report.md"""
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    baseline: str | None = None


def report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    html: bool = False,
    baseline: str | None = None,
) -> Path:
    """Write the report for ``run_dirs`` into ``out_dir``; returns the path of report.md."""
    return build_report(run_dirs, out_dir, html=html, baseline=baseline).path


def build_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    html: bool = False,
    baseline: str | None = None,
    cells: tuple[str, ...] = (),
) -> ReportResult:
    """Like :func:`report` but also returns the files written and the problems found.

    Everything is written into a staging folder that replaces ``out_dir`` only once the report
    is complete; a failure (or Ctrl-C) removes it and leaves ``out_dir`` as it was.
    """
    target = Path(out_dir)
    check_out_dir(target)
    found = discover(list(run_dirs))
    if not found.runs and not found.training:
        raise UserError("nothing to report: " + "; ".join(found.problems or ["no runs given"]))
    chosen = _choose_baseline(found.runs, baseline)
    # resolved: a symlinked --out keeps its link, and ``.`` has a parent to stage in
    with staged_dir(target.resolve()) as stage:
        builder = ReportBuilder(stage, found, chosen, cells)
        result = builder.build()
        if html:
            from needlework.reporting.html import html_page

            tables, notes = builder.html_tables, builder.notes.texts
            page = html_page(tables, builder.figures, found.runs, notes, result.problems)
            write_text(stage / REPORT_HTML, page)
            result.files.append(stage / REPORT_HTML)
    moved = [target / f.relative_to(stage) for f in result.files]
    return ReportResult(target / REPORT_MD, moved, result.problems, result.baseline)


REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_HEADING = "# needlework report\n"
"""report.md's first line: how an earlier report's folder is recognised."""
REPORT_DIRS = {"tables": ".csv", "figures": ".png"}
"""Subfolders of a report and the one kind of file each holds."""


def check_out_dir(out: Path) -> None:
    """Fail before any work unless ``out`` is new, empty, or an earlier report's folder (only
    report.md with its heading, report.html, tables/*.csv and figures/*.png): the report
    replaces the whole folder, so anything else there would be lost."""
    here = Path.cwd().resolve()
    why = ""
    if out.resolve() in (here, *here.parents):
        why = (
            "is the current folder or holds it, and the report replaces its whole folder: "
            "give a subfolder (e.g. --out report)"
        )
    elif (out.exists() or out.is_symlink()) and not out.is_dir():
        why = "exists and is not a folder"
    elif out.exists() and (stray := _not_from_a_report(out)):
        why = (
            f"folder is not empty and was not written by needlework report ({stray}); "
            "refusing to replace it: give a new or empty folder"
        )
    if why:
        raise UserError(f"--out {out}: {why}")
    check_creatable(out, f"--out {out}")  # staged beside the (resolved) folder, renamed there


def _not_from_a_report(out: Path) -> str:
    """Why ``out`` is not an empty folder or an earlier report's folder ("" when it is)."""
    try:
        entries = sorted(out.iterdir())
        if entries and not (out / REPORT_MD).is_file():
            return f"it has {entries[0].name} but no {REPORT_MD}"
        if entries and not (out / REPORT_MD).read_bytes().startswith(REPORT_HEADING.encode()):
            return f"its {REPORT_MD} does not start with {REPORT_HEADING.strip()!r}"
        for entry in entries:
            ext = REPORT_DIRS.get(entry.name)
            if entry.name in (REPORT_MD, REPORT_HTML) and entry.is_file():
                continue
            if ext is None or entry.is_symlink() or not entry.is_dir():
                return f"it holds {entry.name}"
            for item in sorted(entry.iterdir()):
                if item.suffix != ext or item.is_symlink() or not item.is_file():
                    return f"it holds {entry.name}/{item.name}"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return ""


def _choose_baseline(runs: list[EvalRun], wanted: str | None) -> str | None:
    """``--baseline`` if given; else the variant named ``base``; else the first run's variant.

    ``--baseline`` names a run's label (its recorded variant, or its model label for a plain
    ``needlework eval`` run) or a model label, with or without the backend prefix (``hf:``), so
    plain eval runs can be compared without a recipe. A name matching nothing, or models of
    several variants, is a one-line error listing the labels there are.
    """
    variants = list(dict.fromkeys(r.variant for r in runs))
    if wanted is None:
        base = any(r.info.variant == "base" for r in runs)
        return "base" if base else next(iter(variants), None)
    if wanted in variants:
        return wanted
    found: list[str] = []
    for model in (lambda r: r.model, lambda r: r.model.partition(":")[2]):
        found = found or list(dict.fromkeys(r.variant for r in runs if model(r) == wanted))
    if len(found) == 1:
        return found[0]
    if found:
        several = ", ".join(map(repr, found))
        why = f"that model was run as several variants ({several}); name one of them"
    else:
        models = [m for m in dict.fromkeys(r.model for r in runs) if m not in variants]
        also = f" (or one of the models {', '.join(map(repr, models))})" if models else ""
        labels = ", ".join(map(repr, variants)) or "(none)"
        why = f"no such variant or model among the runs; labels: {labels}{also}"
    raise UserError(f"--baseline {wanted!r}: {why}")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


class ReportBuilder:
    """Owns the output folder, baseline, footnotes and files of one report."""

    def __init__(
        self, out: Path, found: Discovery, baseline: str | None, cells: tuple[str, ...] = ()
    ) -> None:
        self.out, self.found, self.baseline, self.cells = out, found, baseline, cells
        groups = group_runs(found.runs)
        rank = {
            lb: min(r.metrics.report_rank for g in vs.values() for r in g.runs)
            for lb, vs in groups.items()
        }
        self.groups = {lb: groups[lb] for lb in sorted(groups, key=rank.__getitem__)}
        self.problems = list(found.problems) + check_groups(self.groups)
        for label, variants in self.groups.items():
            base = self.base_of(label)
            for group in variants.values():
                why = prompt_conflict(group, base) if base and group is not base else ""
                if why:
                    self.problems.append(f"{label}: {why}")
        self.notes = Notes()
        self.files: list[Path] = []
        self.figures: list[tuple[str, Path]] = []
        self.html_tables: list[tuple[str, Table]] = []
        self.used: set[str] = set()

    # -- output helpers ------------------------------------------------------------------------
    def unique(self, folder: str, name: str, ext: str) -> Path:
        """``<out>/<folder>/<slug>.<ext>``, suffixed when two names slug to the same file."""
        stem, i = slug(name), 1
        while f"{folder}/{stem}.{ext}" in self.used:
            i += 1
            stem = f"{slug(name)}-{i}"
        self.used.add(f"{folder}/{stem}.{ext}")
        return self.out / folder / f"{stem}.{ext}"

    def csv(self, name: str, table: Table) -> str:
        path = self.unique("tables", name, "csv")
        write_text(path, table.to_csv())
        self.files.append(path)
        return f"tables/{path.name}"

    def figure(self, name: str, fig: Any, caption: str) -> str:
        path = plots.save(fig, self.unique("figures", name, "png"))
        self.files.append(path)
        self.figures.append((caption, path))
        return f"![{caption}](figures/{path.name})\n"

    def base_of(self, label: str) -> Group | None:
        return self.groups[label].get(self.baseline) if self.baseline else None

    def declared(self, label: str) -> tuple[Figure, ...]:
        """The figures the label's benchmark declared (its first run that declares any)."""
        runs = (r for g in self.groups[label].values() for r in g.runs)
        return next((r.figures for r in runs if r.figures), ())

    def figure_sections(self) -> list[str]:
        """Each declared figure's section, in rank order; figures sharing a ``shared`` name
        are drawn once, where the first label declaring it comes."""
        planned: dict[tuple[str, ...], list[tuple[str, Figure]]] = {}
        for label in self.groups:
            for i, fig in enumerate(self.declared(label)):
                where = (fig.kind, fig.shared) if fig.shared else (label, str(i))
                planned.setdefault(where, []).append((label, fig))
        draw = {
            "line": sections.line_section,
            "heatmap": sections.heatmap_section,
            "scores": sections.scores_section,
        }
        return [draw[items[0][1].kind](self, items) for items in planned.values()]

    # -- sections --------------------------------------------------------------------------------
    def build(self) -> ReportResult:
        parts = (
            [
                self.overall_section(),
                sections.comparison_section(self),
                self.all_metrics_section(),
                sections.pairwise_section(self),
                sections.setting_section(self),
            ]
            if self.found.runs
            else []
        )
        parts += [*self.figure_sections(), sections.cells_section(self)]
        parts.append(sections.other_breakdowns(self))
        parts.append(sections.training_section(self))
        runs_md, runs_csv = runs_table(self.found.runs)
        runs_link = self.csv("runs", runs_csv)
        items = "".join(f"* {p}\n" for p in self.problems)
        head = [
            REPORT_HEADING,
            f"{len(self.found.runs)} evaluation runs, {len(self.found.training)} training runs. "
            f"Baseline for deltas: **{self.baseline or 'none'}**.\n",
            f"## Problems found\n\nThese runs or files are missing or inconsistent:\n\n{items}"
            if self.problems
            else "No problems found in the run folders.\n",
        ]
        tail = [
            f"## Runs\n\n{runs_md.to_markdown()}\nCSV: [{runs_link}]({runs_link})\n",
            READING_GUIDE,
        ]
        text = "\n".join(p for p in [*head, *parts, *tail] if p)
        path = self.out / REPORT_MD
        write_text(path, text)
        self.files.append(path)
        return ReportResult(path, self.files, self.problems, self.baseline)

    def overall_section(self) -> str:
        start = len(self.notes.texts)
        rows = []
        for label, variants in self.groups.items():
            base = self.base_of(label)
            missing = Delta(None, note=f"no {self.baseline} run on {label}")
            for group in variants.values():
                delta = None if group is base else paired_delta(group, base) if base else missing
                rows.append(Row(group, overall(group), delta))
            for metric in secondary_metrics(list(variants.values())):
                for group in variants.values():
                    if not group.has(metric):
                        continue
                    delta = None
                    if base is not None and group is not base:
                        delta = paired_delta(group, base, metric)
                    rows.append(Row(group, overall(group, metric), delta, metric))
        md, out = overall_table(rows, self.baseline or "baseline", self.notes)
        self.html_tables.append(("Overall", md))
        link = self.csv("overall", out)
        return (
            "## Overall: primary metric per benchmark (and its format metric, where it has one)"
            f"\n\n{md.to_markdown()}\n"
            f"{self.notes.to_markdown(start)}\nCSV: [{link}]({link})\n"
        )

    def all_metrics_section(self) -> str:
        """Every score a benchmark records (e.g. KV ``format_match`` next to ``both_correct``).

        Benchmarks with a scores table of their own (a suite) or a single score are left out.
        """
        start = len(self.notes.texts)
        base_name = self.baseline or "baseline"
        md = Table(["benchmark", "metric", "variant", "n", "score [95% CI]", f"Δ vs {base_name}"])
        for label, variants in self.groups.items():
            first = next(iter(variants.values()))
            names = list(dict.fromkeys(m for r in first.runs for m in r.metrics.metrics))
            if any(f.kind == "scores" for f in self.declared(label)) or len(names) < 2:
                continue
            base = self.base_of(label)
            for metric in names:
                for group in variants.values():
                    stat = overall(group, metric)
                    delta = (
                        paired_delta(group, base, metric) if base and group is not base else None
                    )
                    n = stat.n if stat.n is not None else "varies"
                    shown = fmt_delta(delta, self.notes) if delta else ""
                    md.rows.append([label, metric, group.variant, n, fmt_stat(stat), shown])
        if not md.rows:
            return ""
        self.html_tables.append(("All metrics", md))
        return f"## All metrics\n\n{md.to_markdown()}\n{self.notes.to_markdown(start)}\n"

    def breakdown(
        self, label: str, field_name: str, key: KeyFn | None = None, metric: str | None = None
    ) -> tuple[dict[str, dict[str, Stat]], dict[str, dict[str, Delta]], list[str]]:
        """Per-variant stats and per-key paired deltas for one breakdown field, on ``metric``
        (default: the primary one)."""
        series: dict[str, dict[str, Stat]] = {}
        deltas: dict[str, dict[str, Delta]] = {}
        base = self.base_of(label)
        select = key or meta_key(field_name)
        for variant, group in self.groups[label].items():
            name = metric or group.metric
            stats = None if key else breakdown_from_metrics(group, field_name, name)
            if stats is None:
                stats = breakdown_from_predictions(group, select, name)
            if not stats:
                what = f"{name} by {field_name}" if metric else f"breakdown by {field_name}"
                self.problems.append(
                    f"{group.variant} on {label}: no {what} "
                    "in metrics.json or predictions.jsonl; left out of its plot"
                )
                continue
            series[variant] = with_seed_cis(group, stats, select, name)
            if base is not None and group is not base:
                deltas[variant] = {
                    k: paired_delta(group, base, name, select=select, want=k) for k in stats
                }
        keys = sorted({k for s in series.values() for k in s}, key=num_key)
        return series, deltas, keys

    def plot_panel(
        self,
        label: str,
        title: str,
        series: dict[str, dict[str, Stat]],
        x_of: Callable[[str], float],
    ) -> plots.Panel:
        lines = []
        for variant, stats in series.items():
            keys = sorted(stats, key=lambda k: x_of(k))
            st = [stats[k] for k in keys]
            # The 95% CI where there is one, else (several seeds, different samples) the seed range.
            lo = tuple(s.ci_low if s.ci_low is not None else s.seed_min for s in st)
            hi = tuple(s.ci_high if s.ci_high is not None else s.seed_max for s in st)
            seeds = len(self.groups[label][variant].runs)
            name = variant + (f" ({seeds} seeds)" if seeds > 1 else "")
            xs, ys = tuple(x_of(k) for k in keys), tuple(s.mean for s in st)
            lines.append(plots.Series(name, xs, ys, lo, hi))
        return plots.Panel(title, tuple(lines))
