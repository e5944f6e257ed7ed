"""Small helpers shared by the benchmark units (not a unit itself)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Annotated

from pydantic import Field

from needlework.config import Distinct, NonNegativeInt
from needlework.records import Message, Sample

Positions = Annotated[tuple[NonNegativeInt, ...], Distinct]
"""Distinct 0-based positions."""
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$")]
"""A label suffix: letters, digits, '_', '-' or '.'."""


def user_turn(text: str) -> tuple[Message, ...]:
    """The prompt as a single user message (no system message), as every reference sends it."""
    return ({"role": "user", "content": text},)


def with_context_tokens(samples: Iterable[Sample], tokenizer: str | None) -> Iterator[Sample]:
    """The samples, each with ``context_tokens`` (what the model sees: the conversation with its
    chat template and generation prompt) last in its meta when a tokenizer spec is set."""
    if tokenizer is None:
        yield from samples
        return
    from needlework.tokenization import load_counter

    counter = load_counter(tokenizer)
    for s in samples:
        tokens = counter.count_chat(list(s.messages), add_generation_prompt=True)
        yield Sample(s.id, s.messages, s.answers, dict(s.meta, context_tokens=tokens))


def seeded_subset(total: int, size: int | None, seed: int, salt: str) -> list[int]:
    """Sorted indices of a seeded random subset (all of ``range(total)`` when size is None).

    ``salt`` keeps subsets of different benchmarks independent for the same seed.
    """
    if size is None or size >= total:
        return list(range(total))
    rng = random.Random(f"{salt}-{seed}")
    return sorted(rng.sample(range(total), size))
