"""The benchmark contract: samples in, per-sample scores out; aggregation lives in the runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from needlework.records import Sample


class Benchmark(Protocol):
    """A registered frozen dataclass (``@benchmarks.register("mdqa")``) with these members.

    ``group_by`` names ``Sample.meta`` fields the runner breaks metrics down by (a field, never a
    metric name); ``primary_metric`` is the score reports plot; ``secondary_metrics`` are scores
    reports show beside it (tables, a figure panel per breakdown), recorded in metrics.json so
    reporting needs no list of its own. ``max_new_tokens`` None asks the runner to size the answer
    budget from the longest gold answer (``answer_budget``).
    """

    group_by: tuple[str, ...]
    primary_metric: str
    secondary_metrics: tuple[str, ...]
    max_new_tokens: int | None

    def label(self) -> str:
        """Run-folder label: the registry name plus the variant, e.g. ``flenqa_cot``."""
        ...

    def samples(self) -> Iterator[Sample]:
        """Deterministic samples (same config, same order, same text)."""
        ...

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Per-sample scores from pure metric functions in ``evaluation/metrics.py``."""
        ...


def answer_budget(
    samples: Iterable[Sample], count_tokens: Callable[[str], int] | None = None
) -> int:
    """New tokens for benchmarks whose answer has a known form: the longest gold answer in the
    model's tokens (characters when there is no counter, never fewer than tokens) plus a
    quarter, at least 8."""
    count = count_tokens or len
    lengths = [count(a) for s in samples for a in s.answers if a] or [32]
    longest = max(lengths)
    return longest + max(8, longest // 4)
