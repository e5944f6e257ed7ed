"""Confidence intervals: golden values from the closed forms, determinism, edge cases."""

from __future__ import annotations

import math
import random

import pytest

from needlework.stats import (
    Z95,
    mean_ci,
    paired_bootstrap,
    wilson_interval,
)


def wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(2k + z^2 -+ z sqrt(z^2 + 4k(n-k)/n)) / (2(n + z^2)): the textbook form, written
    differently from the implementation so a slip in either shows up."""
    root = z * math.sqrt(z * z + 4 * k * (n - k) / n)
    return (2 * k + z * z - root) / (2 * (n + z * z)), (2 * k + z * z + root) / (2 * (n + z * z))


def test_wilson_8_of_10_matches_closed_form_and_published_value():
    lo, hi = wilson_interval(8, 10)
    ref = wilson_closed_form(8, 10)
    assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # the usual textbook example


@pytest.mark.parametrize("k, n", [(0, 1), (0, 10), (10, 10), (1, 2), (37, 200), (523, 1200)])
def test_wilson_closed_form_grid(k, n):
    lo, hi = wilson_interval(k, n)
    ref = wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0.0, ref[0]), abs=1e-12)
    assert hi == pytest.approx(min(1.0, ref[1]), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_mean_ci_binary_uses_wilson():
    values = [1.0] * 8 + [0.0] * 2
    mean, lo, hi = mean_ci(values)
    assert mean == 0.8 and (lo, hi) == wilson_interval(8, 10)
    assert mean_ci([0, 0, 0]) == (0.0, 0.0, wilson_interval(0, 3)[1])


def test_mean_ci_bootstrap_is_seeded_and_sane():
    rng = random.Random(1)
    values = [rng.random() for _ in range(300)]
    a, b = mean_ci(values), mean_ci(values)
    assert a == b  # same seed, same interval
    mean, lo, hi = a
    assert lo < mean < hi
    sem = (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5
    # percentile bootstrap ~ mean +- 1.96 SEM for a near-uniform sample of 300
    assert hi - lo == pytest.approx(2 * Z95 * sem, rel=0.15)
    assert mean_ci(values, seed=5) != a


def test_mean_ci_constant_and_errors():
    assert mean_ci([0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.1, float("nan")])


def test_paired_bootstrap_detects_a_real_difference_and_not_a_fake_one():
    rng = random.Random(0)
    base = [float(rng.random() < 0.5) for _ in range(400)]
    better = [1.0 if (b or rng.random() < 0.3) else 0.0 for b in base]
    delta, lo, hi = paired_bootstrap(better, base, n=2000, seed=0)
    assert delta == pytest.approx(sum(better) / 400 - sum(base) / 400)
    assert 0 < lo < delta < hi
    same = paired_bootstrap(base, base)
    assert same == (0.0, 0.0, 0.0)
    shuffled = base[:]
    random.Random(3).shuffle(shuffled)
    d, lo, hi = paired_bootstrap(shuffled, base, n=2000)
    assert lo < 0 < hi
    assert paired_bootstrap(better, base, n=500, seed=1) == paired_bootstrap(
        better, base, n=500, seed=1
    )
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_aggregate_predictions_groups_and_skips():
    from needlework.stats import aggregate_predictions

    rows = [
        {"scores": {"em": 1.0, "f1": 0.5}, "meta": {"pos": 10, "kind": "a"}},
        {"scores": {"em": 0.0, "f1": 0.25}, "meta": {"pos": 2, "kind": "b"}},
        {"scores": {"em": 1.0, "f1": 1.0}, "meta": {"pos": 2.0}},
        {"scores": {}, "meta": {"pos": 2}, "skipped": "too long"},
    ]
    out = aggregate_predictions(rows, group_by=("pos", "kind"), primary_metric="em")
    assert out["n"] == 3 and out["n_skipped"] == 1 and out["primary_metric"] == "em"
    assert list(out["metrics"]) == ["em", "f1"]
    em = out["metrics"]["em"]
    assert (em["mean"], em["n"]) == (2 / 3, 3)
    assert (em["ci_low"], em["ci_high"]) == wilson_interval(2, 3)
    assert list(out["by"]["pos"]) == ["2", "10"]  # numeric order; 2.0 and 2 are one group
    assert out["by"]["pos"]["2"]["em"]["n"] == 2
    assert list(out["by"]["kind"]) == ["a", "b", "null"]  # missing field -> "null"
