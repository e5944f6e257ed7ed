"""The generator contract: a registered frozen dataclass that turns an RNG into one task.

A generator knows nothing about tokenizers, budgets, splits or files: the pipeline
(:mod:`needlework.datagen.pipeline`) decides how many dictionaries fit the token budget
(:mod:`needlework.datagen.budget`), where the gold dictionary goes
(:func:`needlework.datagen.dicts.gold_positions`), and which RNG each sample gets, then asks the
generator for the text. That keeps every generator one small pure function of its RNG.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Task:
    """One generated sample: the user prompt, the target answer and what to record about it.

    ``meta`` holds at least ``gold_position`` (0-based dictionary index), ``num_dicts``,
    ``gold_dict_name``, ``gold_key`` and ``gold_value``; generators may add more.
    """

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """A dictionary-retrieval task family (registered in ``needlework.registry.generators``)."""

    num_dicts: int | None
    """Dictionaries per prompt; ``None`` = as many as fit the token budget (chosen by search)."""
    frac_0: float
    """Fraction of each split whose gold dictionary is forced to position 0."""
    frac_top5: float
    """Further fraction whose gold dictionary is drawn from the first positions (spec §2.1.7)."""
    answer_template: bool
    """Whether the prompt spells out the answer template."""

    def build(self, rng: random.Random, num_dicts: int, gold_position: int) -> Task:
        """One task with ``num_dicts`` dictionaries and the gold one at ``gold_position``."""
        ...


@functools.cache
def load_prompt(name: str) -> str:
    """``prompts/<name>.txt`` with its trailing newline removed (as the official code loads it)."""
    path = resources.files("needlework.datagen") / "prompts" / f"{name}.txt"
    return path.read_text(encoding="utf-8").rstrip("\n")
