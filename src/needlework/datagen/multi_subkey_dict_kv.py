"""Multi-subkey dictionary key-value retrieval — the harder task "From Artificial Needles to Real
Haystacks" (Xiong et al., ICLR 2025, arXiv:2406.19292) used to finetune GPT-3.5 Turbo (spec §2.3).

Run:  needlework generate --config configs/datagen/multi_subkey_dict_kv_gpt35.yaml

Keys are tuples of integer subkeys, e.g. ``{(141, 986, 163): 2528, (726, 947, 349, 820): 4130}``.
The question names the gold key's subkeys in a shuffled order; distractor keys share some of the
gold subkeys (the ``common`` ones) but never all of them — no distractor is a permutation or a
superset of the gold subkey set — so only the full set identifies the gold key. The official
repository ships no multi-subkey config: the defaults below are our choices, documented in
docs/datagen.md, built on the knobs of the official ``DictRetrievalDataConfig``.
"""

from __future__ import annotations

import functools
import random
from typing import Annotated, ClassVar

from pydantic import Field

from needlework.config import Fraction, NonNegativeInt, PositiveInt, config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.dicts import (
    DictTask,
    DigitRange,
    NumberPool,
    NumberPools,
    Ordered,
    Range,
    dict_lines,
    number_pool,
)
from needlework.registry import generators


def _key_text(key: tuple[str, ...]) -> str:
    return "(" + ", ".join(key) + ")"


@generators.register("multi_subkey_dict_kv")
@config
class MultiSubkeyDictKV(DictTask, NumberPools):
    """Tuple-of-integers keys; find the key holding given subkeys, its value and dictionary."""

    prompt_stem: ClassVar[str] = "multi_subkey_dict_kv"

    num_dicts: UnitCount | None = 49
    """Dictionaries per prompt (paper: 49 for GPT-3.5 Turbo); null = as many as fit the budget."""
    gold_dict_size: PositiveInt = 3
    """Pairs in the gold dictionary (unknown in the paper; 3 as in the simple task)."""
    dict_size_range: Range = (3, 4)
    """Pairs in each other dictionary, inclusive (unknown; 3-4 as in the simple task)."""
    frac_0: Fraction = 0.0
    """Fraction of samples per split with the gold dictionary forced first (unknown; 0)."""
    frac_top5: Fraction = 0.0
    """Further fraction with the gold dictionary in the first int(N*0.05) positions (0)."""
    gold_key_size: Annotated[int, Field(ge=2)] = 3
    """Subkeys in the gold key (the paper's figure shows 3; a multi-subkey key has >= 2)."""
    key_size_range: Annotated[tuple[Annotated[int, Field(ge=2)], int], Ordered] = (3, 4)
    """Subkeys in each other key, inclusive (the figure shows 3-4)."""
    common_subkey_size: NonNegativeInt = 2
    """Gold subkeys that distractor keys may contain (the figure suggests 2); < gold_key_size."""
    prob_ng_has_common: Fraction = 0.5
    """Probability that a distractor key draws from the common subkeys at all (unknown; 0.5)."""
    prob_ng_per_common: Fraction = 0.5
    """Then the probability of including each common subkey (unknown; 0.5)."""
    subkey_digits: DigitRange = (3, 3)
    """Digit count of subkeys, inclusive (official builder default: 3)."""
    value_digits: DigitRange = (4, 4)
    """Digit count of values, inclusive (official builder default: 4)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.common_subkey_size >= self.gold_key_size:
            raise ValueError(
                f"common_subkey_size: must be < gold_key_size ({self.gold_key_size}), got "
                f"{self.common_subkey_size}"
            )
        if self.key_size_range[0] <= self.common_subkey_size:
            raise ValueError(
                "key_size_range: lower bound must exceed common_subkey_size, so a "
                "distractor key is never made of shared subkeys only"
            )
        distinct = 9 * 10 ** (self.subkey_digits[1] - 1)
        if max(self.key_size_range[1], self.gold_key_size) * 2 > distinct:
            raise ValueError("subkey_digits: too few distinct subkeys for the key sizes")

    @functools.cached_property
    def _subkeys(self) -> NumberPool:
        return number_pool(*self.subkey_digits)

    def _fill(self, rng: random.Random, key: list[str], size: int) -> list[str]:
        """Top ``key`` up to ``size`` distinct subkeys and shuffle it (random positions)."""
        pool = self._subkeys
        while len(key) < size:
            s = pool.one(rng)
            if s not in key:
                key.append(s)
        rng.shuffle(key)
        return key

    def _distractor_key(
        self, rng: random.Random, common: list[str], gold: frozenset[str]
    ) -> tuple[str, ...]:
        lo, hi = self.key_size_range
        while True:
            size = rng.randint(lo, hi)
            shared: list[str] = []
            if common and rng.random() < self.prob_ng_has_common:
                shared = [c for c in common if rng.random() < self.prob_ng_per_common]
            key = self._fill(rng, shared, size)
            if not gold.issubset(key):  # never all gold subkeys: no permutation, no superset
                return tuple(key)

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        values = self._values
        gold_list = self._fill(rng, [], self.gold_key_size)
        common = gold_list[: self.common_subkey_size]
        gold_key = tuple(self._fill(rng, list(gold_list), self.gold_key_size))
        gold = frozenset(gold_key)
        gold_value = values.one(rng)

        def pair() -> tuple[tuple[str, ...], str]:
            key = self._distractor_key(rng, common, gold)
            value = values.one(rng)
            while value == gold_value:
                value = values.one(rng)
            return key, value

        at = rng.randrange(self.gold_dict_size)
        gold_pairs = [pair() for _ in range(at)] + [(gold_key, gold_value)]
        gold_pairs += [pair() for _ in range(self.gold_dict_size - 1 - at)]
        dicts = [dict(gold_pairs)]
        lo, hi = self.dict_size_range
        for _ in range(num_dicts - 1):
            dicts.append(dict(pair() for _ in range(rng.randint(lo, hi))))
        dicts.insert(gold_position, dicts.pop(0))
        rendered = [
            "{" + ", ".join([f"{_key_text(k)}: {v}" for k, v in d.items()]) + "}" for d in dicts
        ]
        shown = rng.sample(gold_key, len(gold_key))  # the question's (shuffled) subkey order
        subkeys_text = ", ".join(shown)
        name = str(gold_position + 1)
        prompt = load_prompt(self.prompt_name).format(
            disctionaries=dict_lines(rendered), gold_subkeys=subkeys_text
        )
        answer = load_prompt("multi_subkey_dict_kv.answer").format(
            gold_subkeys=subkeys_text,
            gold_key=_key_text(gold_key),
            gold_value=gold_value,
            gold_dict_name=name,
        )
        overlaps = [len(gold.intersection(k)) for d in dicts for k in d if k != gold_key]
        return Task(
            prompt,
            answer,
            {
                "gold_position": gold_position,
                "num_dicts": num_dicts,
                "gold_dict_name": name,
                "gold_key": [int(s) for s in gold_key],
                "gold_value": int(gold_value),
                "answer_template": self.answer_template,
                "gold_key_text": _key_text(gold_key),
                "gold_subkeys_shown": [int(s) for s in shown],
                "distractors_sharing": sum(1 for o in overlaps if o),
                "max_shared_subkeys": max(overlaps, default=0),
            },
        )
