"""Fit prompts to a token budget: the acceptance rule and the search for ``num_<unit>``.

Acceptance (spec §2.1.6, made tokenizer-agnostic): a sample is kept when its prompt has fewer
than ``max_context_tokens - reserve_tokens`` tokens (the official rule with its 100-token
reserve; the official count also included BOS) *and* the whole conversation, chat template
included, fits in ``max_context_tokens``. A sample that fails is re-drawn from its own RNG.

When the number of units (dictionaries, passages) is not fixed it is chosen once per seed by
search, not by blind retries:
probe prompts give a tokens-per-dictionary estimate, a short gallop brackets the answer around
it and a bisection finds the largest count at which every probe prompt fits (RULER's
binary search, as a function). Each probe step costs one encode per probe prompt.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from needlework.datagen.base import Generator, Task
from needlework.errors import UserError
from needlework.records import Message
from needlework.tokenization import TokenCounter, largest_fitting

PROBES = 16


@dataclass(frozen=True)
class Budget:
    """The token budget a generated sample must fit."""

    max_context_tokens: int
    reserve_tokens: int

    @property
    def prompt_limit(self) -> int:
        """Prompts must have strictly fewer tokens than this."""
        return self.max_context_tokens - self.reserve_tokens

    def fits(self, prompt_tokens: int, conversation_tokens: int) -> bool:
        return prompt_tokens < self.prompt_limit and conversation_tokens <= self.max_context_tokens

    def all_fit(self, sizes: list[tuple[int, int]]) -> bool:
        """Every ``(prompt, conversation)`` token count fits."""
        return all(self.fits(p, c) for p, c in sizes)

    def describe(self) -> str:
        return (
            f"prompt < {self.prompt_limit} tokens (max_context_tokens "
            f"{self.max_context_tokens} - reserve_tokens {self.reserve_tokens}) and "
            f"conversation <= {self.max_context_tokens}"
        )


def messages(task: Task) -> list[dict[str, str]]:
    """The canonical chat form of a task: one user turn, one assistant turn, no system turn."""
    return [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": task.answer}]


def measure(counter: TokenCounter, task: Task) -> tuple[int, int]:
    """(prompt tokens, whole-conversation tokens with the chat template)."""
    # cast: messages() builds {role, content} dicts of str, i.e. Message
    return counter.count(task.prompt), counter.count_chat(cast("list[Message]", messages(task)))


def probe_sizes(
    gen: Generator, counter: TokenCounter, key: str, n: int, probes: int
) -> list[tuple[int, int]]:
    """(prompt, conversation) tokens of the deterministic probe prompts (gold first) at ``n``
    units."""
    return [
        measure(counter, gen.build(random.Random(f"{key}:probe:{j}"), n, 0)) for j in range(probes)
    ]


def overrun(sizes: list[tuple[int, int]], budget: Budget) -> str:
    """Name the quantity that breaks the budget, and its range over the ``(prompt,
    conversation)`` token counts of some samples: a prompt can fit while the whole conversation
    (answer and chat template added) does not, and a message quoting only prompts misleads."""
    prompts = [p for p, _ in sizes]
    convs = [c for _, c in sizes]
    parts = []
    if any(p >= budget.prompt_limit for p in prompts):
        parts.append(
            f"prompts take {min(prompts)}-{max(prompts)} tokens, need < {budget.prompt_limit} "
            f"(max_context_tokens {budget.max_context_tokens} - reserve_tokens "
            f"{budget.reserve_tokens})"
        )
    if any(c > budget.max_context_tokens for c in convs):
        parts.append(
            f"whole conversations (prompt + answer + chat template) take {min(convs)}-"
            f"{max(convs)} tokens, need <= max_context_tokens {budget.max_context_tokens}"
        )
    return "; ".join(parts) or f"samples need {budget.describe()}"


def fit_num_units(
    gen: Generator,
    counter: TokenCounter,
    budget: Budget,
    *,
    key: str,
    probes: int = PROBES,
    max_dicts: int = 1_000_000,
) -> int:
    """Largest number of units at which all ``probes`` probe prompts fit ``budget``."""
    sizes = functools.cache(lambda n: probe_sizes(gen, counter, key, n, probes))

    def largest(n: int) -> int:
        return max(p for p, _ in sizes(n))

    if not budget.all_fit(sizes(2)):
        raise UserError(
            f"max_context_tokens: budget too small for even num_{gen.unit}=2 with tokenizer "
            f"{counter.name}: probe {overrun(sizes(2), budget)}"
        )
    # max_units: the most units the generator can put in one prompt, and why (distinct ids)
    limit: tuple[int, str] | None = getattr(gen, "max_units", None)
    if limit is not None and limit[0] < max_dicts:
        max_dicts = max(2, limit[0])  # build() cannot go past it: never probe beyond
    else:
        limit = None
    # Secant steps on the largest probe prompt vs the limit give a close first guess ...
    target = budget.prompt_limit - 1
    a, b = 2, min(10, max_dicts)
    fa, fb = largest(a), largest(b)
    for _ in range(3):
        slope = (fb - fa) / (b - a) if b != a else 0
        if slope <= 0:
            break
        nxt = max(2, min(max_dicts, int(b + (target - fb) / slope)))
        if nxt == b:
            break
        a, fa, b, fb = b, fb, nxt, largest(nxt)
    # ... then gallop from it to a bracket and bisect (counts up to 2 are known to fit).
    found = max(
        2, largest_fitting(lambda n: n <= 2 or (n <= max_dicts and budget.all_fit(sizes(n))), b)
    )
    if limit is not None and found >= max_dicts:
        # the budget takes every unit the generator can build, and would take more
        raise UserError(
            f"max_context_tokens: with generator.num_{gen.unit}=null, filling the budget "
            f"(max_context_tokens={budget.max_context_tokens}, tokenizer {counter.name}) would "
            f"take more {gen.unit} than can be made: {limit[1]}, and all {max_dicts} fit; lower "
            f"max_context_tokens or set generator.num_{gen.unit}"
        )
    return found


def check_fixed(
    gen: Generator,
    counter: TokenCounter,
    budget: Budget,
    num_units: int,
    *,
    key: str,
    probes: int = 8,
) -> None:
    """Fail early (before any output) when a fixed unit count cannot fit the budget at all (no
    probe prompt fits)."""
    sizes = probe_sizes(gen, counter, key, num_units, probes)
    if any(budget.fits(p, c) for p, c in sizes):
        return
    field = f"num_{gen.unit}"
    if num_units <= 2:
        advice = f"{field}=2 is the least: raise max_context_tokens"
    elif budget.all_fit(probe_sizes(gen, counter, key, 2, probes)):
        advice = f"lower {field} or set it to null to choose it by budget"
    else:
        advice = f"not even {field}=2 fits: raise max_context_tokens"
    raise UserError(
        f"generator.{field}: {num_units} {gen.unit} do not fit max_context_tokens="
        f"{budget.max_context_tokens} with tokenizer {counter.name} (probe "
        f"{overrun(sizes, budget)}); {advice}"
    )


def accept(
    build: Callable[[], Task], counter: TokenCounter, budget: Budget, max_tries: int, field: str
) -> tuple[Task, int, int, int]:
    """Draw tasks until one fits: (task, prompt tokens, conversation tokens, draws used)."""
    for tries in range(1, max_tries + 1):
        task = build()
        p, c = measure(counter, task)
        if budget.fits(p, c):
            return task, p, c, tries
    raise UserError(
        f"max_tries: no sample fit the budget in {max_tries} draws "
        f"({budget.describe()}); lower generator.{field}"
    )
