"""Test-only benchmark and backend for the runner tests, registered only while a test runs.

``nw_test_arith`` asks "What is i + i?"; ``nw_test_calculator`` answers by reading the prompt,
streams results one by one (like the real streaming backends), can be told to crash after k
answers (``CRASH``) and rejects prompts over ``max_context_chars`` like a real context check.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from needlework.evaluation.base import Benchmark
from needlework.models.base import Backend, check_prompt_lengths
from needlework.records import Sample
from needlework.registry import backends, benchmarks

CRASH: dict[str, Any] = {"after": None}  # set by a test: raise after this many answers
CALLS: list[list[str]] = []  # prompts each generate call received


@dataclass(frozen=True)
class ArithBench(Benchmark):
    """i + i for i in range(num_samples); every ``long_every``-th prompt padded long."""

    num_samples: int = 12
    tag: str = ""
    prompt_style: str = "plain"
    long_every: int = 0
    score_kind: str = "float"

    group_by = ("bucket",)
    primary_metric = "exact_match"
    max_new_tokens = 5

    def samples(self) -> Iterator[Sample]:
        for i in range(self.num_samples):
            text = f"What is {i} + {i}?"
            if self.prompt_style != "plain":
                text = f"Please compute. {text}"
            if self.long_every and i % self.long_every == self.long_every - 1:
                text = "padding " * 20 + text
            yield Sample(
                id=f"arith-{i}",
                messages=({"role": "user", "content": text},),
                answers=(str(2 * i),),
                meta={"bucket": i % 3, "index": i},
            )

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        if self.score_kind == "broken":
            return {"exact_match": "yes"}  # type: ignore[dict-item]
        return {
            "exact_match": float(output.strip() == sample.answers[0]),
            "chars": float(len(output)),
        }


@dataclass(frozen=True)
class DuplicateIdBench(ArithBench):
    def label(self) -> str:
        return "nw_test_dupes"

    def samples(self) -> Iterator[Sample]:
        for s in super().samples():
            yield Sample(id="same", messages=s.messages, answers=s.answers, meta=s.meta)


@dataclass(frozen=True)
class SuiteBench(Benchmark):
    """Delegates everything (like the lm-eval ``general`` suite)."""

    group_by = ()
    primary_metric = "acc"

    seen: list = field(default_factory=list, compare=False, repr=False)

    def run_suite(self, model_config: Any, run_dir: Any, limit: int | None) -> dict[str, Any]:
        self.seen.append((model_config, run_dir, limit))
        return {
            "benchmark": "nw_test_suite",
            "metrics": {"acc": {"mean": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n": 4}},
        }


@dataclass(frozen=True)
class Calculator(Backend):
    """Answers "What is a + b?" correctly; streams; optional context limit in characters."""

    speed_fields: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    max_context_chars: int | None = None
    batch_size: int = 4

    def describe(self) -> str:
        return "calculator"

    def token_counter(self) -> str | None:
        return None

    def generate(self, conversations: Sequence[Sequence[dict]], *, max_new_tokens: int):
        out = [""] * len(conversations)
        for i, text in self.generate_iter(conversations, max_new_tokens=max_new_tokens):
            out[i] = text
        return out

    def generate_iter(self, conversations, *, max_new_tokens: int):
        prompts = [c[-1]["content"] for c in conversations]
        check_prompt_lengths(
            [len(p) for p in prompts],
            limit=self.max_context_chars,
            max_new_tokens=max_new_tokens,
            model=self.describe(),
        )
        CALLS.append(prompts)
        for i, prompt in enumerate(prompts):
            if CRASH["after"] is not None:
                if CRASH["after"] <= 0:
                    raise RuntimeError("simulated crash")
                CRASH["after"] -= 1
            a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", prompt)[0])
            yield i, str(a + b)


UNITS = [
    (benchmarks, "nw_test_arith", ArithBench),
    (benchmarks, "nw_test_dupes", DuplicateIdBench),
    (benchmarks, "nw_test_suite", SuiteBench),
    (backends, "nw_test_calculator", Calculator),
]


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Register the test units, and remove them afterwards so registry-wide tests elsewhere
    (every benchmark has a config, ...) never see them."""
    for registry, name, cls in UNITS:
        registry.register(name)(cls)
    CRASH["after"] = None
    CALLS.clear()
    try:
        yield
    finally:
        for registry, name, _ in UNITS:
            registry._units.pop(name, None)
