"""Multi-value dictionary key-value retrieval: one key recurs in several dictionaries.

Run:  needlework generate --config configs/datagen/multi_value_kv_smollm2.yaml

A prompt lists ``num_dicts`` dictionaries ``Dictionary [i] {key: value, ...}`` of integers, as in
the simple task of "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR 2025,
arXiv:2406.19292), but the asked key occurs in ``occurrences`` different dictionaries, each time
with another value; the model reports every value, in the order the dictionaries appear, with
its dictionary. Why: the paper's tasks have exactly one needle, so a model can stop at the first
match; here it must find *all* matches spread over the context and keep them in order (the
multi-needle retrieval of RULER's multi-value NIAH), which penalises stopping early or skipping
a late occurrence.

Rules: the gold key occurs exactly ``occurrences`` times, once in each gold dictionary, and no
other key equals it; the gold values are distinct and occur nowhere else. One occurrence is at
the pipeline's ``gold_position`` (so the recorded depth is where a gold dictionary is) and the
others are uniform over the other positions; ``gold_positions`` in the meta lists all of them in
prompt order and ``first_position`` the first.
"""

from __future__ import annotations

import random
from typing import Annotated, ClassVar

from pydantic import Field

from needlework.config import config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.dicts import DictTask, DigitRange, NumberPools, dict_lines, render_dict
from needlework.registry import generators

FILL_VALUE, FILL_DICT = "<fill-in-value>", "<fill-in-dictionary-name>"


def _answer(gold_key: str, items: list[tuple[str, str]]) -> str:
    """The answer text (or, with fill-ins, the template): every value with its dictionary."""
    item = load_prompt("multi_value_kv.item")
    text = ", ".join(item.format(value=v, dict_name=d) for v, d in items)
    return load_prompt("multi_value_kv.answer").format(gold_key=gold_key, items=text)


@generators.register("multi_value_kv")
@config
class MultiValueKV(DictTask, NumberPools):
    """Integer dictionaries where one key recurs with different values; report them all."""

    prompt_stem: ClassVar[str] = "multi_value_kv"

    num_dicts: UnitCount | None = 84
    """Dictionaries per prompt (84: one below what the budget search finds for the paper's 4K
    mistral:v1 budget, as 85 is for the simple task); null = as many as fit max_context_tokens."""
    occurrences: Annotated[int, Field(ge=2)] = 3
    """Dictionaries holding the gold key (>= 2; 3 = more than one needle without long answers)."""
    key_digits: DigitRange = (3, 4)
    """Digit count of keys, inclusive (3-4, as the simple task)."""
    value_digits: DigitRange = (3, 4)
    """Digit count of values, inclusive (3-4, as the simple task)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_dicts is not None and self.num_dicts < self.occurrences:
            raise ValueError(
                f"num_dicts: the {self.occurrences} occurrences need {self.occurrences} distinct "
                f"dictionaries, got {self.num_dicts}"
            )
        distinct = 10 ** self.value_digits[1] - 10 ** (self.value_digits[0] - 1)
        if distinct < 2 * self.occurrences:
            raise ValueError(
                f"value_digits: {distinct} distinct values are too few for {self.occurrences} "
                "distinct gold values"
            )

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        """One task. The budget search probes from 2 dictionaries up; below ``occurrences`` the
        prompt has ``occurrences`` dictionaries, the very prompt it has at ``num_dicts =
        occurrences`` for the same RNG, so the search never settles below it."""
        keys, vals = self._keys, self._values
        occ = self.occurrences
        num_dicts = max(num_dicts, occ)
        others = [p for p in range(num_dicts) if p != gold_position]
        positions = sorted([gold_position, *rng.sample(others, occ - 1)])
        slot_of = {p: i for i, p in enumerate(positions)}
        gold_key = keys.one(rng)
        gold_values: list[str] = []
        while len(gold_values) < occ:
            v = vals.one(rng)
            if v not in gold_values:
                gold_values.append(v)
        banned = set(gold_values)
        lo, hi = self.dict_size_range
        span = hi - lo + 1
        sizes = [
            self.gold_dict_size - 1 if p in slot_of else lo + int(rng.random() * span)
            for p in range(num_dicts)
        ]
        n = sum(sizes)
        ks, vs = keys.draw(rng, n), vals.draw(rng, n)
        # Distractor pairs never use the gold key or a gold value: the key occurs exactly
        # ``occ`` times and each gold value exactly once.
        for i in range(n):
            while ks[i] == gold_key:
                ks[i] = keys.one(rng)
            while vs[i] in banned:
                vs[i] = vals.one(rng)
        bodies = []
        s = 0
        for p, size in enumerate(sizes):
            pairs = list(zip(ks[s : s + size], vs[s : s + size]))
            s += size
            if p in slot_of:
                pairs.insert(
                    rng.randrange(self.gold_dict_size), (gold_key, gold_values[slot_of[p]])
                )
            bodies.append(render_dict(dict(pairs)))
        names = [str(p + 1) for p in positions]
        template = _answer(gold_key, [(FILL_VALUE, FILL_DICT)] * occ)
        prompt = load_prompt(self.prompt_name).format(
            dictionaries=dict_lines(bodies),
            gold_key=gold_key,
            occurrences=occ,
            template=template,
        )
        return Task(
            prompt,
            _answer(gold_key, list(zip(gold_values, names))),
            {
                "gold_position": gold_position,
                "num_dicts": num_dicts,
                "gold_dict_name": str(gold_position + 1),
                "gold_key": int(gold_key),
                "gold_value": int(gold_values[slot_of[gold_position]]),
                "first_position": positions[0],
                "answer_template": self.answer_template,
                "occurrences": occ,
                "gold_positions": positions,
                "gold_values": [int(v) for v in gold_values],
                "gold_dict_names": names,
            },
        )
