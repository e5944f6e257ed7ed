"""Reporting tests: the stats API (CONTRACTS §D) must be importable.

Until ``needlework.evaluation.stats`` lands, a minimal stand-in with the same signatures is
installed so the reporting tests can run; it is dropped as soon as the real module exists.
"""

from __future__ import annotations

import importlib.util
import math
import random
import sys
import types

if importlib.util.find_spec("needlework.evaluation.stats") is None:  # pragma: no cover

    def _mean_ci(values):
        vals = [float(v) for v in values]
        n = len(vals)
        mean = sum(vals) / n
        if all(v in (0.0, 1.0) for v in vals):
            z = 1.959963984540054
            centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
            half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
            return mean, centre - half, centre + half
        rng = random.Random(0)
        boots = sorted(sum(rng.choice(vals) for _ in range(n)) / n for _ in range(1000))
        return mean, boots[25], boots[974]

    def _paired_bootstrap(a, b, *, n=10000, seed=0):
        diffs = [float(x) - float(y) for x, y in zip(a, b)]
        rng = random.Random(seed)
        k = len(diffs)
        boots = sorted(sum(diffs[rng.randrange(k)] for _ in range(k)) / k for _ in range(1000))
        return sum(diffs) / k, boots[25], boots[974]

    stats = types.ModuleType("needlework.evaluation.stats")
    stats.mean_ci = _mean_ci
    stats.paired_bootstrap = _paired_bootstrap
    sys.modules["needlework.evaluation.stats"] = stats
    import needlework.evaluation

    needlework.evaluation.stats = stats
