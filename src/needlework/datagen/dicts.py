"""Plain helpers shared by the dictionary-retrieval generators (spec §2.1.4–2.1.7).

Numbers are drawn as the official generator draws them — a digit count uniform in the range,
then a number uniform among those with that many digits — and are kept as decimal strings, since
the prompt only ever shows them as text. The RNG is always an explicit ``random.Random``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Annotated, ClassVar, NamedTuple

from pydantic import Field

from needlework.config import Fraction, Ordered, PositiveInt, config
from needlework.datagen.base import GoldFractions, UnitCount

# Largest population list a NumberPool materialises (2**20 strings is ~60 MB, built in ~0.2 s).
_POOL_LIMIT = 1 << 20


Range = Annotated[tuple[PositiveInt, PositiveInt], Ordered]
"""An inclusive ``[lo, hi]`` range of counts (>= 1)."""
DigitCount = Annotated[int, Field(ge=1, le=18)]
"""Digits of a number (at most 18: a NumberPool draws it as an int)."""
DigitRange = Annotated[tuple[DigitCount, DigitCount], Ordered]
"""An inclusive ``[lo, hi]`` range of digit counts."""


@config
class DictTask(GoldFractions):
    """The fields, rules and naming every dictionary-retrieval generator shares; a generator
    subclasses it (frozen dataclass), adds its own fields (its digit ranges among them) and may
    redeclare a field to change its default."""

    unit: ClassVar[str] = "dicts"
    prompt_stem: ClassVar[str]
    """``prompts/<stem>.txt`` (no answer template) and ``<stem>_wtemplate.txt``."""

    num_dicts: UnitCount | None = 85
    """Dictionaries per prompt (paper: 85 at 4K); null = as many as fit max_context_tokens."""
    gold_dict_size: PositiveInt = 3
    """Pairs in the gold dictionary (paper: 3)."""
    dict_size_range: Range = (3, 4)
    """Pairs in each other dictionary, inclusive (paper: randint(3, 4))."""
    answer_template: bool = True
    """Append the answer template to the prompt (the paper trains both variants)."""
    frac_0: Fraction = 0.05
    """Fraction of samples per split with the gold dictionary (the first one, where there are
    several) forced first (paper: 0.05)."""
    frac_top5: Fraction = 0.03
    """Further fraction with it in the first int(N*0.05) positions (paper: 0.03; N = samples in
    the split, the official quirk)."""

    @property
    def prompt_name(self) -> str:
        return f"{self.prompt_stem}_wtemplate" if self.answer_template else self.prompt_stem

    @property
    def num_units(self) -> int | None:
        return self.num_dicts


class NumberPool:
    """Random positive integers with a uniform digit count in ``[lo, hi]``, as strings.

    For small ranges (3–4 digits: 18,000 entries) the draw is ``rng.choices`` over a list where
    each digit count has equal total weight, which is exact and ~10x faster than two
    ``randint`` calls; larger ranges draw the digit count and the number with ``rng.random``.
    """

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        sizes = {d: 9 * 10 ** (d - 1) for d in range(lo, hi + 1)}
        biggest = sizes[hi]
        total = biggest * (hi - lo + 1)
        self._pop: list[str] | None = None
        if total <= _POOL_LIMIT:
            pop: list[str] = []
            for d, size in sizes.items():
                pop.extend([str(x) for x in range(10 ** (d - 1), 10**d)] * (biggest // size))
            self._pop = pop

    def draw(self, rng: random.Random, k: int) -> list[str]:
        if self._pop is not None:
            return rng.choices(self._pop, k=k)
        return [self.one(rng) for _ in range(k)]

    def one(self, rng: random.Random) -> str:
        if self._pop is not None:
            return self._pop[int(rng.random() * len(self._pop))]
        d = self.lo + int(rng.random() * (self.hi - self.lo + 1))
        return str(10 ** (d - 1) + int(rng.random() * 9 * 10 ** (d - 1)))


class NumberPools:
    """The shared number pools of a generator's ``key_digits`` and ``value_digits`` fields,
    built on first use (a mixin: the fields stay where each generator declares them)."""

    key_digits: tuple[int, int]
    value_digits: tuple[int, int]

    @functools.cached_property
    def _keys(self) -> NumberPool:
        return number_pool(*self.key_digits)

    @functools.cached_property
    def _values(self) -> NumberPool:
        return number_pool(*self.value_digits)


class GoldPlan(NamedTuple):
    """Gold positions of one split, with the samples the front-loading tweak moved."""

    positions: list[int]
    forced_first: list[int]
    """Sample indices whose gold dictionary was forced to position 0 (``frac_0``)."""
    front: list[int]
    """Sample indices whose gold position was redrawn from the first positions (``frac_top5``)."""


@functools.lru_cache(maxsize=16)
def number_pool(lo: int, hi: int) -> NumberPool:
    """A shared (read-only) pool per digit range: building one takes milliseconds."""
    return NumberPool(lo, hi)


def gold_position_plan(
    rng: random.Random, num_samples: int, num_dicts: int, frac_0: float, frac_top5: float
) -> GoldPlan:
    """Gold-dictionary index for each sample of one split, as ``generate_dataset.py`` does it.

    Uniform over ``0..num_dicts-1``; then ``int(N*frac_0)`` samples (chosen without replacement)
    get position 0 and ``int(N*frac_top5)`` *other* samples get a position uniform over
    ``0..int(N*0.05)-1`` where N is the number of *samples* (the official quirk: 0..16 for
    N=350, 0..6 for N=150, whatever ``num_dicts`` is). We clamp that range to ``num_dicts``,
    which only matters for small prompts (the official code would place the gold dictionary
    past the end there).
    """
    positions = [rng.randrange(num_dicts) for _ in range(num_samples)]
    n0 = int(num_samples * frac_0)
    n5 = int(num_samples * frac_top5)  # n0 + n5 <= num_samples: frac_0 + frac_top5 <= 1
    forced = rng.sample(range(num_samples), n0)
    chosen = set(forced)
    front = rng.sample([i for i in range(num_samples) if i not in chosen], n5)
    for i in forced:
        positions[i] = 0
    front_range = max(1, min(int(num_samples * 0.05), num_dicts))
    for i in front:
        positions[i] = rng.randrange(front_range)
    return GoldPlan(positions, forced, front)


def render_dict(pairs: dict[str, str]) -> str:
    """``{8735: 462, 665: 8253}``: ``str(dict)`` of int keys, as the prompt shows it."""
    return "{" + ", ".join([f"{k}: {v}" for k, v in pairs.items()]) + "}"


def render_bodies(keys: list[str], values: list[str], sizes: Sequence[int]) -> list[str]:
    """Render consecutive runs of ``sizes`` pairs as dictionaries, with Python dict semantics.

    A key repeated within one dictionary overwrites the earlier value and the dictionary shrinks
    by one, as in the official code; that rare case takes the slow path through ``dict``.
    """
    pairs = list(map(": ".join, zip(keys, values)))
    out = []
    s = 0
    for size in sizes:
        e = s + size
        ks = keys[s:e]
        if len(set(ks)) == size:
            out.append("{" + ", ".join(pairs[s:e]) + "}")
        else:
            out.append(render_dict(dict(zip(ks, values[s:e]))))
        s = e
    return out


@functools.lru_cache(maxsize=8)
def _prefixes(n: int) -> tuple[str, ...]:
    return tuple(f"Dictionary [{i}] " for i in range(1, n + 1))


def dict_lines(bodies: Sequence[str]) -> str:
    """``Dictionary [i] {...}`` lines, names 1..N in order, joined by newlines."""
    return "\n".join(map(str.__add__, _prefixes(len(bodies)), bodies))
