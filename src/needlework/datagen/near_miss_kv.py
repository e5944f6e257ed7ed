"""Near-miss dictionary key-value retrieval: the simple task with look-alike distractor keys.

Run:  needlework generate --config configs/datagen/near_miss_kv_smollm2.yaml

The simple task of "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR 2025,
arXiv:2406.19292): ``num_dicts`` dictionaries of integer keys and values, report one key's value
and its dictionary. Here ``near_miss_count`` of the distractor keys are near misses of the gold
key: the same number of digits, differing in exactly ``differ_digits`` digit positions (``4817``
for ``4317``). Why: with random distractors, matching the first digit or two of a key almost
always finds the right one; near misses make an approximate match give a wrong, confident answer,
so the model has to compare every digit (exact-match retrieval, as for ids, phone numbers or
account numbers in real contexts).

Rules: the gold key and the gold value occur exactly once; the near-miss keys are distinct, never
equal the gold key, each occurs once, and sit in dictionaries other than the gold one (uniform
over their pairs); every other key of the gold key's length differs from it in more than
``differ_digits`` positions, so the placed near misses are the only keys that close.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, ClassVar

from pydantic import Field

from needlework.config import PositiveInt, config
from needlework.datagen.base import Slot, Task, load_prompt
from needlework.datagen.dicts import (
    DictTask,
    DigitCount,
    DigitRange,
    NumberPools,
    Ordered,
    dict_lines,
    render_bodies,
)
from needlework.registry import generators

DIGITS = "0123456789"


def differing(a: str, b: str) -> int:
    """Digit positions where two keys of one length differ (-1 when the lengths differ)."""
    if len(a) != len(b):
        return -1
    return sum(x != y for x, y in zip(a, b))


def near_miss_total(num_digits: int, differ: int) -> int:
    """Keys of ``num_digits`` digits (no leading zero) differing from one in ``differ`` places."""
    total = math.comb(num_digits - 1, differ) * 9**differ
    if differ >= 1:
        total += math.comb(num_digits - 1, differ - 1) * 8 * 9 ** (differ - 1)
    return total


@generators.register("near_miss_kv")
@config
class NearMissKV(DictTask, NumberPools):
    """The simple dictionary task where some distractor keys differ from the gold key by a digit."""

    prompt_stem: ClassVar[str] = "near_miss_kv"

    near_miss_count: PositiveInt = 5
    """Near-miss keys placed per prompt, outside the gold dictionary (5: a handful, so they stay
    a minority of ~300 keys but a lookup by approximate match will usually hit one)."""
    differ_digits: PositiveInt = 1
    """Digit positions in which each near miss differs from the gold key (1: the closest miss);
    at most key_digits' lower bound - 1, so other keys can stay clearly different."""
    key_digits: Annotated[tuple[Annotated[int, Field(ge=2, le=18)], DigitCount], Ordered] = (3, 4)
    """Digit count of keys, inclusive (3-4, as the simple task); at least 2, as a near miss
    shares all but differ_digits digits with the gold key."""
    value_digits: DigitRange = (3, 4)
    """Digit count of values, inclusive (3-4, as the simple task)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        shortest = self.key_digits[0]
        if self.differ_digits >= shortest:
            raise ValueError(
                f"differ_digits: must be < key_digits' lower bound ({shortest}), "
                f"got {self.differ_digits}"
            )
        most = near_miss_total(shortest, self.differ_digits)
        if self.near_miss_count > most:
            raise ValueError(
                f"near_miss_count: {shortest}-digit keys have {most} near misses at "
                f"{self.differ_digits} digit(s), got {self.near_miss_count}"
            )
        if (
            self.num_dicts is not None
            and (self.num_dicts - 1) * self.dict_size_range[0] < self.near_miss_count
        ):
            raise ValueError(
                f"near_miss_count: {self.near_miss_count} near misses do not fit the "
                f"{self.num_dicts - 1} other dictionaries"
            )

    def _near_misses(self, rng: random.Random, gold: str, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            key = list(gold)
            for i in rng.sample(range(len(gold)), self.differ_digits):
                choices = [d for d in DIGITS[1 if i == 0 else 0 :] if d != gold[i]]
                key[i] = rng.choice(choices)
            text = "".join(key)
            if text not in out:
                out.append(text)
        return out

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        """One task. A budget probe with too few distractor pairs for ``near_miss_count`` (2
        dictionaries) places as many near misses as there are pairs."""
        keys, vals = self._keys, self._values
        gold_key, gold_value = keys.one(rng), vals.one(rng)
        lo, hi = self.dict_size_range
        span = hi - lo + 1
        sizes = [lo + int(rng.random() * span) for _ in range(num_dicts - 1)]
        g = self.gold_dict_size - 1
        n = g + sum(sizes)
        near = self._near_misses(rng, gold_key, min(self.near_miss_count, n - g))
        ks, vs = keys.draw(rng, n), vals.draw(rng, n)
        # Other keys are neither the gold key nor within differ_digits of it (so the placed
        # near misses are the only close keys) and other values differ from the gold value.
        for i in range(n):
            while 0 <= differing(ks[i], gold_key) <= self.differ_digits or vs[i] == gold_value:
                ks[i], vs[i] = keys.one(rng), vals.one(rng)
        spots = rng.sample(range(g, n), len(near))  # pair slots outside the gold dictionary
        for spot, key in zip(spots, near):
            ks[spot] = key
        slot_ = rng.randrange(self.gold_dict_size)
        gold_ks = [*ks[:slot_], gold_key, *ks[slot_:g]]
        gold_vs = [*vs[:slot_], gold_value, *vs[slot_:g]]
        bodies = render_bodies(gold_ks + ks[g:], gold_vs + vs[g:], [g + 1, *sizes])
        bodies.insert(gold_position, bodies.pop(0))
        # Pair slot -> final dictionary position: other dictionary j (1-based) lands at j - 1
        # before the gold position and at j from it on.
        owner = [j for j, size in enumerate(sizes, 1) for _ in range(size)]
        placed = sorted(
            (owner[spot - g] - (owner[spot - g] <= gold_position), spot, key)
            for spot, key in zip(spots, near)
        )
        name = str(gold_position + 1)
        prompt = load_prompt(self.prompt_name).format(
            dictionaries=dict_lines(bodies), gold_key=gold_key
        )
        answer = load_prompt("near_miss_kv.answer").format(
            gold_key=gold_key, gold_value=gold_value, gold_dict_name=name
        )
        return Task(
            prompt,
            answer,
            {
                "gold_position": gold_position,
                "num_dicts": num_dicts,
                "gold_dict_name": name,
                "gold_key": int(gold_key),
                "gold_value": int(gold_value),
                "answer_template": self.answer_template,
                "differ_digits": self.differ_digits,
                "near_miss_keys": [int(k) for _, _, k in placed],
                "near_miss_positions": [p for p, _, _ in placed],
            },
        )
