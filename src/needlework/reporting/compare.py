"""Numbers behind the report: seeds combined, breakdowns, and paired deltas between variants.

Rules that keep the numbers honest:

* Seeds of one variant are averaged (mean of the per-seed means) and their spread (min-max, std)
  is kept next to the mean. A 95% CI for several seeds is computed over per-sample scores averaged
  across the seeds, only when every seed scored the same sample ids.
* A delta between two variants is paired: per-sample scores aligned by sample id *and* prompt
  (``prompt_sha256``), then ``stats.paired_bootstrap``. Two sides whose same ids hold different
  prompts get no delta (and the report lists it under problems); two sides that scored
  different subsets (a rerun with a smaller ``--limit``) are paired on the samples both scored,
  and the note says so. We never compare different inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

from needlework.records import Mean, Prediction
from needlework.reporting.runs import EvalRun
from needlework.stats import mean_ci, paired_bootstrap

# A function from a prediction to its breakdown key (None = leave the sample out).
KeyFn = Callable[[Prediction], "str | None"]


@dataclass(frozen=True)
class Stat:
    """A mean with its 95% CI; with several seeds also their spread."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int | None
    """Samples per seed (None when seeds differ in size)."""
    seeds: int = 1
    seed_min: float | None = None
    seed_max: float | None = None
    seed_std: float | None = None


@dataclass(frozen=True)
class Delta:
    """variant − baseline on the same samples; ``delta`` is None when no honest value exists."""

    delta: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    note: str = ""


@dataclass
class Group:
    """All seeds of one variant on one benchmark label."""

    variant: str
    label: str
    benchmark: str
    runs: list[EvalRun]

    @property
    def metric(self) -> str:
        return self.runs[0].primary_metric

    @property
    def has_predictions(self) -> bool:
        return all(r.predictions is not None for r in self.runs)

    def has(self, metric: str) -> bool:
        """Every seed recorded ``metric`` in metrics.json."""
        return all(metric in r.metrics.metrics for r in self.runs)


def group_runs(runs: list[EvalRun]) -> dict[str, dict[str, Group]]:
    """label -> variant -> Group, both in first-seen order."""
    out: dict[str, dict[str, Group]] = {}
    for run in runs:
        new = Group(run.variant, run.label, run.benchmark, [])
        out.setdefault(run.label, {}).setdefault(run.variant, new).runs.append(run)
    return out


def check_groups(groups: dict[str, dict[str, Group]]) -> list[str]:
    """Drop seeds that disagree with a group's first seed on benchmark or primary metric."""
    problems = []
    for label, variants in groups.items():
        for group in variants.values():
            first = group.runs[0]
            kind = (first.benchmark, first.primary_metric)
            for run in [r for r in group.runs if (r.benchmark, r.primary_metric) != kind]:
                problems.append(
                    f"{run.path}: {run.benchmark}/{run.primary_metric} differs from the other "
                    f"seeds of {group.variant} on {label} ({first.benchmark}/"
                    f"{first.primary_metric}, {first.path}); left out of the report"
                )
            group.runs = [r for r in group.runs if (r.benchmark, r.primary_metric) == kind]
    return problems


def combine(per_seed: list[Mean]) -> Stat:
    """One Stat from the per-seed means."""
    if len(per_seed) == 1:
        s = per_seed[0]
        return Stat(s.mean, s.ci_low, s.ci_high, s.n)
    means, sizes = [s.mean for s in per_seed], {s.n for s in per_seed}
    n = sizes.pop() if len(sizes) == 1 else None
    spread = (len(means), min(means), max(means), statistics.stdev(means))
    return Stat(statistics.fmean(means), None, None, n, *spread)


def overall(group: Group, metric: str | None = None) -> Stat:
    """The group's score on ``metric`` (default: primary) from metrics.json, seeds combined."""
    metric = metric or group.metric
    per_seed = [r.metrics.metrics[metric] for r in group.runs if metric in r.metrics.metrics]
    stat = combine(per_seed)
    return _seed_ci(stat, group, metric) if stat.seeds > 1 else stat


def _seed_ci(
    stat: Stat, group: Group, metric: str, select: KeyFn | None = None, want: str | None = None
) -> Stat:
    """``stat`` with a 95% CI over per-sample scores averaged across seeds, where there are any
    (see :func:`seed_scores`)."""
    scores, _ = seed_scores(group, metric, select, want)
    if not scores:
        return stat
    _, lo, hi = mean_ci(list(scores.values()))
    return replace(stat, ci_low=float(lo), ci_high=float(hi))


def breakdown_from_metrics(group: Group, field: str, metric: str) -> dict[str, Stat] | None:
    """metrics.json ``by[field]`` per key, seeds combined; None if a seed lacks the field."""
    per_key: dict[str, list[Mean]] = {}
    for run in group.runs:
        by = run.metrics.by.get(field)
        if by is None:
            return None
        for key, stats in by.items():
            if metric in stats:
                per_key.setdefault(key, []).append(stats[metric])
    seeds = len(group.runs)
    return {k: combine(v) for k, v in per_key.items() if len(v) == seeds}


def breakdown_from_predictions(group: Group, key: KeyFn, metric: str) -> dict[str, Stat] | None:
    """Per-key stats recomputed from predictions (for bins metrics.json does not have)."""
    if not group.has_predictions:
        return None
    per_key: dict[str, list[Mean]] = {}
    for run in group.runs:
        cells: dict[str, list[float]] = {}
        for row in run.predictions or []:
            k = key(row)
            if k is not None and metric in row.scores:
                cells.setdefault(k, []).append(row.scores[metric])
        for k, values in cells.items():
            mean, lo, hi = mean_ci(values)
            per_key.setdefault(k, []).append(Mean(mean=mean, ci_low=lo, ci_high=hi, n=len(values)))
    seeds = len(group.runs)
    return {k: combine(v) for k, v in per_key.items() if len(v) == seeds}


def with_seed_cis(group: Group, stats: dict[str, Stat], key: KeyFn, metric: str) -> dict[str, Stat]:
    """Breakdown cells of a several-seed group with a 95% CI, as :func:`overall` computes one.

    Per-seed CIs cannot be combined, so a cell's CI is over its per-sample scores averaged across
    seeds, only where every seed scored the same samples; other cells keep no CI (plots then
    shade the seed range). Without a CI, coinciding lines of two variants would show no band.
    """
    if len(group.runs) < 2 or not group.has_predictions:
        return stats
    return {
        k: stat if stat.ci_low is not None else _seed_ci(stat, group, metric, key, k)
        for k, stat in stats.items()
    }


def seed_scores(
    group: Group, metric: str, select: KeyFn | None = None, want: str | None = None
) -> tuple[dict[str, float] | None, str]:
    """Per-sample ``metric`` averaged over seeds, keyed by sample id; or (None, why not).

    ``select``/``want`` restrict to samples whose key equals ``want`` (one breakdown cell). Rows
    without the metric are not part of it (a suite scores each task with its own metrics); if
    that leaves the two sides with different ids, the comparison reports the mismatch.
    """
    if not group.has_predictions:
        missing = [str(r.path) for r in group.runs if r.predictions is None]
        return None, f"no predictions.jsonl for {group.variant} ({', '.join(missing)})"
    per_seed: list[dict[str, float]] = []
    for run in group.runs:
        scores: dict[str, float] = {}
        for row in run.predictions or []:
            if metric in row.scores and (select is None or select(row) == want):
                scores[row.id] = row.scores[metric]
        per_seed.append(scores)
    ids = set(per_seed[0])
    for run, scores in zip(group.runs[1:], per_seed[1:]):
        if set(scores) != ids:
            return None, (
                f"seeds of {group.variant} scored different samples "
                f"({group.runs[0].path} vs {run.path})"
            )
    return {i: statistics.fmean(s[i] for s in per_seed) for i in sorted(ids)}, ""


def paired_delta(
    group: Group,
    base: Group,
    metric: str | None = None,
    select: KeyFn | None = None,
    want: str | None = None,
) -> Delta:
    """``group − base`` with a paired bootstrap 95% CI over samples both scored."""
    metric = metric or group.metric
    a, why_a = seed_scores(group, metric, select, want)
    b, why_b = seed_scores(base, metric, select, want)
    if a is None or b is None:
        return Delta(None, note=why_a or why_b)
    shared = set(a) & set(b)
    conflict = prompt_conflict(group, base)  # any changed prompt: not the same runs' inputs
    if conflict:
        return Delta(None, note=conflict)
    if not shared:
        if not a and not b:
            return Delta(None, note=f"no per-sample '{metric}' scores in predictions.jsonl")
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        return Delta(None, note=mismatch_note(group.variant, only_a, base.variant, only_b))
    ids = sorted(shared)
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    delta, lo, hi = _paired(xs, ys)
    note = ""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - shared), sorted(set(b) - shared)
        note = f"paired on the {len(ids)} samples both scored; " + mismatch_note(
            group.variant, only_a, base.variant, only_b, paired=True
        )
    return Delta(delta, lo, hi, len(ids), note)


def _paired(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Paired bootstrap of mean(xs) − mean(ys), whatever order stats.py subtracts in."""
    delta, lo, hi = (float(v) for v in paired_bootstrap(xs, ys))
    expected = statistics.fmean(xs) - statistics.fmean(ys)
    if abs(delta - expected) > 1e-9 and abs(delta + expected) <= 1e-9:
        delta, lo, hi = -delta, -hi, -lo
    return delta, lo, hi


def mismatch_note(
    name_a: str, only_a: list[str], name_b: str, only_b: list[str], *, paired: bool = False
) -> str:
    def some(ids: list[str]) -> str:
        return f"{len(ids)} ({_first_ids(ids)})" if ids else "0"

    tail = "left out" if paired else "no paired delta"
    return f"{some(only_a)} only in {name_a}, {some(only_b)} only in {name_b}; {tail}"


def _first_ids(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")


def prompt_conflict(group: Group, base: Group) -> str:
    """Why ``group`` and ``base`` are not the same inputs: shared sample ids whose prompt hash
    differs between or within the two sides; "" when none do."""
    seen_a = {r.id for run in group.runs for r in run.predictions or []}
    shared = seen_a & {r.id for run in base.runs for r in run.predictions or []}
    hashes: dict[str, set[str]] = {}
    for run in [*group.runs, *base.runs]:
        for row in run.predictions or []:
            if row.id in shared:
                hashes.setdefault(row.id, set()).add(row.prompt_sha256)
    differ = sorted(i for i, h in hashes.items() if len(h) > 1)
    if not differ:
        return ""
    return (
        f"{len(differ)} of {len(hashes)} shared sample ids ({_first_ids(differ)}) have "
        f"different prompts (prompt_sha256) in {group.variant} and {base.variant}: not the same "
        "inputs; no paired delta"
    )
