"""The benchmark contract: samples in, per-sample scores out; aggregation lives in the runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from needlework.records import Figure, Sample


class Evaluated(Protocol):
    """What every registered benchmark unit has, whether it is scored sample by sample
    (:class:`Benchmark`) or runs as a whole (:class:`Suite`).

    ``group_by`` names ``Sample.meta`` fields the runner breaks metrics down by (a field, never a
    metric name); ``primary_metric`` is the score reports plot; ``secondary_metrics`` are scores
    reports show beside it (tables, a figure panel per breakdown), recorded in metrics.json so
    reporting needs no list of its own. ``max_new_tokens`` None asks the runner to size the answer
    budget from the longest gold answer (``answer_budget``). ``figures()`` and ``report_rank``
    tell reports how to draw the breakdowns and where the sections go; the runner records both
    in metrics.json.
    """

    group_by: tuple[str, ...]
    primary_metric: str
    secondary_metrics: tuple[str, ...]
    max_new_tokens: int | None
    needs_token_counter: bool
    """Prompts are sized in the model's tokens: a ``tokenizer`` field left None is set to the
    backend's ``token_counter()`` when the eval config is built (e.g. NIAH's haystack)."""
    report_rank: int
    """Where this benchmark's sections go in a report, lowest first (the paper's order: MDQA
    10, FLenQA 20, KV retrieval 30, NIAH 40, general 50; a new benchmark, e.g. 100)."""

    def figures(self) -> tuple[Figure, ...]:
        """How reports draw this benchmark's breakdowns (empty: tables only)."""
        ...

    def label(self) -> str:
        """Run-folder label: the registry name plus the variant, e.g. ``flenqa_cot``."""
        ...


class Benchmark(Evaluated, Protocol):
    """A registered frozen dataclass (``@benchmarks.register("mdqa")``): samples in, per-sample
    scores out."""

    def samples(self) -> Iterator[Sample]:
        """Deterministic samples (same config, same order, same text)."""
        ...

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Per-sample scores from pure metric functions in ``evaluation/metrics.py``."""
        ...


class Suite(Evaluated, Protocol):
    """A benchmark that runs and scores itself as a whole (the lm-eval ``general`` suite):
    registered like a benchmark, with ``run_suite`` instead of ``samples()``/``score()``. The
    runner hands it the model config and the run folder and records what it returns."""

    def run_suite(self, model_config: Any, run_dir: Any, limit: int | None) -> dict[str, Any]:
        """Run every task, write predictions.jsonl and metrics.json; return the metrics."""
        ...


class Declares(Protocol):
    """What reports need of a benchmark or suite (read-only, so properties qualify)."""

    @property
    def report_rank(self) -> int: ...

    def figures(self) -> tuple[Figure, ...]: ...


def report_declaration(bench: Declares) -> dict[str, Any]:
    """What metrics.json records of how reports draw ``bench`` (see records.Figure); a
    ContractError naming the unit when ``figures()``/``report_rank`` are not what reports read."""
    from needlework.errors import ContractError

    figures = bench.figures()
    rank = bench.report_rank
    if not isinstance(figures, tuple) or not all(isinstance(f, Figure) for f in figures):
        raise ContractError(
            f"{type(bench).__name__}.figures(): expected a tuple of needlework.records.Figure, "
            f"got {figures!r:.80}"
        )
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise ContractError(f"{type(bench).__name__}.report_rank: expected an int, got {rank!r}")
    return {"report_rank": rank, "figures": [f.to_json() for f in figures]}


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
