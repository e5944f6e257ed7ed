"""The benchmark contract: samples in, per-sample scores out; aggregation lives in the runner.

A benchmark writes what only it knows: ``samples()``, ``score()``, ``primary_metric`` (its
score names) and ``group_by`` (the sample fields its scores are broken down by). Everything
else has a default in :class:`Benchmark`, derived from those declarations, which a benchmark
overrides where it knows better (as ``models.base.Backend`` does for backends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from needlework.records import Figure, Sample


class Benchmark:
    """Base of every registered benchmark unit: a frozen ``@config`` dataclass registered with
    ``@benchmarks.register("name")`` in ``benchmarks/name.py``, whose fields are its settings.

    A suite that runs and scores itself (the lm-eval ``general`` suite) writes ``run_suite``
    (and, if it needs data, ``preflight``) instead of ``samples()``/``score()``.
    """

    if TYPE_CHECKING:  # written by each benchmark (registration fails without them)

        @property
        def primary_metric(self) -> str:
            """The score reports plot (a key of ``score()``'s dict)."""

        @property
        def group_by(self) -> tuple[str, ...]:
            """``Sample.meta`` fields the runner breaks every score down by."""

        def samples(self) -> Iterator[Sample]:
            """Deterministic samples (same config, same order, same text)."""

        def score(self, sample: Sample, output: str) -> dict[str, float]:
            """Per-sample scores from pure metric functions in ``evaluation/metrics.py``."""

    secondary_metrics: tuple[str, ...] = ()
    """Scores reports show beside the primary one (tables, a figure panel per breakdown)."""
    max_new_tokens: int | None = None
    """The answer budget; None sizes it from the longest gold answer (:func:`answer_budget`)."""

    @property
    def report_rank(self) -> int:
        """Where this benchmark's sections go in a report, lowest first (the paper's order:
        MDQA 10, FLenQA 20, KV retrieval 30, NIAH 40, general 50; any other 100)."""
        return 100

    @property
    def needs_token_counter(self) -> bool:
        """Prompts are sized in the model's tokens: a ``tokenizer`` field left None is set to the
        backend's ``token_counter()`` when the eval config is built. Default: has that field."""
        return "tokenizer" in getattr(self, "__dataclass_fields__", {})

    def label(self) -> str:
        """Run-folder label: the registry name, plus the ``tag`` field where there is one."""
        name = getattr(type(self), "registry_name", type(self).__name__.lower())
        tag = getattr(self, "tag", "")
        return f"{name}_{tag}" if tag else name

    def figures(self) -> tuple[Figure, ...]:
        """How reports draw the breakdowns: a line over the one ``group_by`` field, a heatmap
        over the first two when there are more (none without a breakdown)."""
        x, y = (*self.group_by, "", "")[:2]
        if not x:
            return ()
        if not y:
            return (Figure("line", heading=f"{{label}}: {{metric}} by {x}", name=f"by_{x}", x=x),)
        heading = f"{{label}}: {{metric}} by {x} × {y}"
        return (Figure("heatmap", heading=heading, name="heatmap", x=x, y=y),)


def report_declaration(bench: Any) -> dict[str, Any]:
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
