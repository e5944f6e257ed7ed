"""Confidence intervals for benchmark scores (pure functions, seeded, numpy only).

* ``mean_ci`` — 95% interval of a mean: Wilson score interval when every value is 0 or 1 (exact
  match, accuracy: well behaved near 0 and 1 and for small n, unlike the normal approximation),
  percentile bootstrap otherwise.
* ``paired_bootstrap`` — difference of two models' means on the *same* samples, resampling sample
  indices jointly (the right test for "finetuned vs base on the same prompts").
* ``aggregate_predictions`` — predictions.jsonl rows -> the metrics.json aggregates (every score's
  mean, CI and n, overall and per value of each group-by field), usable on any run folder.

Random resampling uses ``numpy.random.default_rng(seed)`` (an explicit generator, never the global
state), so every interval is reproducible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile
_CHUNK = 500  # bootstrap resamples drawn at once (bounds memory for large n)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n >= 1`` (Wilson 1927)."""
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)  # exact ends, no rounding slop
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def _floats(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}: no values")
    if any(math.isnan(v) for v in out):
        raise ValueError(f"{name}: NaN among the values")
    return out


def mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: Wilson for 0/1 values, else a seeded percentile bootstrap."""
    vals = _floats(values, "mean_ci")
    mean = sum(vals) / len(vals)
    if all(v in (0.0, 1.0) for v in vals):
        lo, hi = wilson_interval(int(sum(vals)), len(vals))
        return mean, lo, hi
    if len(set(vals)) == 1:
        return mean, mean, mean
    import numpy as np

    arr = np.asarray(vals, dtype=np.float64)
    boot = _bootstrap_means(arr[None, :], n_boot, seed)[0]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return mean, float(lo), float(hi)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, n: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), lo, hi)``: 95% percentile bootstrap over aligned samples."""
    va, vb = _floats(a, "paired_bootstrap"), _floats(b, "paired_bootstrap")
    if len(va) != len(vb):
        raise ValueError(
            f"paired_bootstrap: a and b must be aligned, got {len(va)} and {len(vb)} values"
        )
    import numpy as np

    diff = np.asarray(va, dtype=np.float64) - np.asarray(vb, dtype=np.float64)
    delta = float(diff.mean())
    if np.all(diff == diff[0]):
        return delta, delta, delta
    boot = _bootstrap_means(diff[None, :], n, seed)[0]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return delta, float(lo), float(hi)


def unpaired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), lo, hi)`` for two independent samples (different inputs, e.g.
    official vs re-created rows): normal-approximation 95% CI, ``z * sqrt(var_a/n_a +
    var_b/n_b)`` with population variances (``p(1-p)`` for 0/1 scores)."""
    va, vb = _floats(a, "unpaired_difference"), _floats(b, "unpaired_difference")
    ma, mb = sum(va) / len(va), sum(vb) / len(vb)
    var = (
        sum((x - ma) ** 2 for x in va) / len(va) ** 2
        + sum((y - mb) ** 2 for y in vb) / len(vb) ** 2
    )
    half = Z95 * math.sqrt(var)
    return ma - mb, ma - mb - half, ma - mb + half


def _bootstrap_means(rows, n_boot: int, seed: int):
    """Means of ``n_boot`` resamples (with replacement) of each row of ``rows``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = rows.shape[1]
    out = np.empty((rows.shape[0], n_boot))
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, size, size=(k, size))
        out[:, start : start + k] = rows[:, idx].mean(axis=-1)
    return out


def aggregate_predictions(
    rows: Iterable[Mapping[str, Any]],
    *,
    group_by: Sequence[str] = (),
    primary_metric: str | None = None,
) -> dict[str, Any]:
    """``n``, ``n_skipped``, ``primary_metric``, ``metrics`` and ``by`` of metrics.json.

    ``metrics`` maps each score name (in first-seen order) to ``{mean, ci_low, ci_high, n}``;
    ``by[field][value]`` holds the same for the rows whose ``meta[field]`` is ``value``. Group keys
    are strings (JSON for non-strings: a missing field groups as ``"null"``), numeric ones in
    numeric order. Rows with ``skipped`` set are counted, never scored.
    """
    rows = list(rows)
    scored = [r for r in rows if not r.get("skipped")]
    names: list[str] = []
    for r in scored:
        names.extend(k for k in r["scores"] if k not in names)
    by: dict[str, dict[str, Any]] = {}
    for field in group_by:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in scored:
            groups.setdefault(_group_key((r.get("meta") or {}).get(field)), []).append(r)
        by[field] = {key: summary(groups[key], names) for key in _natural(groups)}
    return {
        "n": len(scored),
        "n_skipped": len(rows) - len(scored),
        "primary_metric": primary_metric,
        "metrics": summary(scored, names),
        "by": by,
    }


def summary(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        values = [r["scores"][name] for r in rows if name in r["scores"]]
        if values:
            mean, lo, hi = mean_ci(values)
            out[name] = {"mean": mean, "ci_low": lo, "ci_high": hi, "n": len(values)}
    return out


def _group_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value)


def _natural(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)
