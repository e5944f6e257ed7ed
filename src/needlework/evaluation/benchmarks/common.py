"""Small helpers shared by the benchmark units (not a unit itself)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from needlework.records import Message

if TYPE_CHECKING:
    from needlework.tokenization import TokenCounter


def user_turn(text: str) -> tuple[Message, ...]:
    """The prompt as a single user message (no system message), as every reference sends it."""
    return ({"role": "user", "content": text},)


def token_counter(spec: str | None) -> TokenCounter | None:
    """``load_counter(spec)``, or None when no tokenizer was configured."""
    if spec is None:
        return None
    from needlework.tokenization import load_counter

    return load_counter(spec)


def context_tokens(counter: TokenCounter, messages: tuple[Message, ...]) -> int:
    """What the model sees: the conversation with its chat template and generation prompt."""
    return counter.count_chat(list(messages), add_generation_prompt=True)


def seeded_subset(total: int, size: int | None, seed: int, salt: str) -> list[int]:
    """Sorted indices of a seeded random subset (all of ``range(total)`` when size is None).

    ``salt`` keeps subsets of different benchmarks independent for the same seed.
    """
    if size is None or size >= total:
        return list(range(total))
    rng = random.Random(f"{salt}-{seed}")
    return sorted(rng.sample(range(total), size))


def check_positions(name: str, positions: tuple[int, ...], limit: int | None) -> None:
    """``ValueError("<name>: ...")`` unless positions are distinct, >= 0 and < limit."""
    if len(set(positions)) != len(positions):
        raise ValueError(f"{name}: positions must be distinct, got {list(positions)}")
    for p in positions:
        if p < 0 or (limit is not None and p >= limit):
            bound = f" and < {limit}" if limit is not None else ""
            raise ValueError(f"{name}: each position must be >= 0{bound}, got {p}")
