"""The generator contract: a registered frozen dataclass that turns an RNG into one task.

A generator knows nothing about tokenizers, budgets, splits or files: the pipeline
(:mod:`needlework.datagen.pipeline`) decides how many units (dictionaries, passages) fit the
token budget (:mod:`needlework.datagen.budget`), where the gold unit goes
(:func:`needlework.datagen.dicts.gold_position_plan`), and which RNG and :class:`Slot` each sample
gets, then asks the generator for the text. That keeps every generator one small pure function
of its RNG (and, for generators built on real questions, of its slot).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import Field

from needlework.errors import UserError

S = TypeVar("S", bound=Sequence[Any])
T = TypeVar("T")

UnitCount = Annotated[int, Field(ge=2)]
"""Units per prompt: the gold one and at least one other."""


@dataclass(frozen=True)
class Task:
    """One generated sample: the user prompt, the target answer and what to record about it.

    ``meta`` is the generator's own record of the sample (the pipeline adds seed, split, index,
    token counts, ``num_<unit>``, ``gold_position`` and ``gold_depth``). ``questions`` are the
    real benchmark questions the sample uses: the pipeline lists them in ``manifest.json`` so
    evaluation can hold them out (:mod:`needlework.heldout`).
    """

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    questions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slot:
    """Where a sample sits in its dataset. ``ordinal`` numbers the samples of one seed across
    splits (train first), so a generator drawing real questions can give each its own."""

    seed: int
    split: str
    index: int
    ordinal: int


@runtime_checkable
class Generator(Protocol):
    """A task family (registered in ``needlework.registry.generators``): a prompt made of
    ``num_units`` units (dictionaries, passages, records), one of them gold.

    A generator that cannot build prompts past some count may also define ``max_units``, a
    ``(count, reason)`` pair: the budget search then stops there (with an error naming the
    reason when the budget would take more) instead of asking :meth:`build` for more."""

    unit: ClassVar[str]
    """What a prompt is made of, plural (``dicts``, ``docs``): the meta and manifest say
    ``num_<unit>``."""
    frac_0: float
    """Fraction of each split whose gold unit is forced to position 0."""
    frac_top5: float
    """Further fraction whose gold unit is drawn from the first positions (spec §2.1.7)."""

    @property
    def num_units(self) -> int | None:
        """Units per prompt; ``None`` = as many as fit the token budget (chosen by search)."""
        ...

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        """One task with ``num_units`` units and the gold one at ``gold_position``. ``slot`` is
        None for the budget search's probe prompts."""
        ...


class GoldFractions:
    """The rule between the gold-position fields every generator here declares (``frac_0``,
    ``frac_top5``, each a :data:`~needlework.config.Fraction`): a mixin, so the fields keep
    their place in each class (and in its ``config.yaml``)."""

    frac_0: float
    frac_top5: float

    def __post_init__(self) -> None:
        if self.frac_0 + self.frac_top5 > 1:
            raise ValueError("frac_top5: frac_0 + frac_top5 must be <= 1")


def slot_item(
    items: Sequence[T], rng: random.Random, slot: Slot | None, key: str, have: str, more: str
) -> T:
    """The item (a real question) sample ``slot`` uses: one distinct item per sample of a seed,
    in an order seeded by ``key`` and the seed; a probe (no slot) draws one from ``rng``. A seed
    wanting more than there are is an error saying what there is (``have``, with ``{n}``) and
    which field to raise for ``more``."""
    if slot is None:
        return items[int(rng.random() * len(items))]
    order = _order(len(items), f"{key}:{slot.seed}")
    if slot.ordinal >= len(order):
        raise UserError(
            f"num_train: {have.format(n=len(order))}; sample {slot.ordinal + 1} of seed "
            f"{slot.seed} needs one more (lower num_train + num_eval or raise {more})"
        )
    return items[order[slot.ordinal]]


@functools.lru_cache(maxsize=8)
def _order(n: int, key: str) -> tuple[int, ...]:
    return tuple(random.Random(key).sample(range(n), n))


@functools.cache
def load_prompt(name: str) -> str:
    """``prompts/<name>.txt`` with its trailing newline removed (as the official code loads it)."""
    path = resources.files("needlework.datagen") / "prompts" / f"{name}.txt"
    return path.read_text(encoding="utf-8").rstrip("\n")
