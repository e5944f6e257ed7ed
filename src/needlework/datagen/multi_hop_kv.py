"""Multi-hop dictionary key-value retrieval: follow a chain of keys through several dictionaries.

Run:  needlework generate --config configs/datagen/multi_hop_kv_smollm2.yaml

A prompt lists ``num_dicts`` dictionaries ``Dictionary [i] {key: value, ...}`` of integers, as in
the simple task of "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR 2025,
arXiv:2406.19292). The question gives one key; its value is itself a key of another dictionary,
whose value is a key of a third, and so on for ``hops`` lookups; the model reports every hop and
the final value. Why: the paper's two tasks need one lookup; here each lookup's result is the
next query, so the model must retrieve, then re-query the context with what it found (the
retrieval pattern of multi-hop QA), and an error at any hop changes the answer.

Rules: the chain numbers are distinct; each chain key (the first key and every intermediate
value) occurs exactly once as a key in the prompt, the final value never occurs as a key, and no
chain number occurs as a distractor key or value, so the chain is unique and ends where it says.
The chain's dictionaries sit at distinct positions: the first hop's at ``gold_position``, the
others uniform over the remaining positions (``hop_positions`` in the meta, in hop order).
"""

from __future__ import annotations

import functools
import random
from typing import Annotated, ClassVar

from pydantic import Field

from needlework.config import config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.dicts import (
    DictTask,
    DigitRange,
    NumberPool,
    dict_lines,
    number_pool,
    render_dict,
)
from needlework.registry import generators

FILL_KEY, FILL_VALUE, FILL_DICT = "<fill-in-key>", "<fill-in-value>", "<fill-in-dictionary-name>"


def _answer(steps: list[tuple[str, str, str]], final_value: str) -> str:
    """The answer text (or, with fill-ins, the template): one sentence per hop, then the end."""
    step = load_prompt("multi_hop_kv.step")
    text = " ".join(step.format(key=k, value=v, dict_name=d) for k, v, d in steps)
    return load_prompt("multi_hop_kv.answer").format(steps=text, final_value=final_value)


@generators.register("multi_hop_kv")
@config
class MultiHopKV(DictTask):
    """Integer dictionaries where values are keys; follow a key through ``hops`` lookups."""

    prompt_stem: ClassVar[str] = "multi_hop_kv"

    num_dicts: UnitCount | None = 83
    """Dictionaries per prompt (83: one below what the budget search finds for the paper's 4K
    mistral:v1 budget, as 85 is for the simple task); null = as many as fit max_context_tokens."""
    hops: Annotated[int, Field(ge=2)] = 2
    """Lookups in the chain (>= 2; 2 = the shortest real multi-hop question)."""
    digits: DigitRange = (3, 4)
    """Digit count of keys and values, inclusive (3-4, as the simple task); one range for both,
    since every chain value is also a key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_dicts is not None and self.num_dicts < self.hops:
            raise ValueError(
                f"num_dicts: the {self.hops} hops need {self.hops} distinct dictionaries, got "
                f"{self.num_dicts}"
            )
        distinct = 10 ** self.digits[1] - 10 ** (self.digits[0] - 1)
        if distinct < 2 * (self.hops + 1):
            raise ValueError(
                f"digits: {distinct} distinct numbers are too few for a chain of {self.hops} hops"
            )

    @functools.cached_property
    def _numbers(self) -> NumberPool:
        return number_pool(*self.digits)

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        """One task. The budget search probes from 2 dictionaries up; below ``hops`` the prompt
        has ``hops`` dictionaries, the very prompt it has at ``num_dicts = hops`` for the same
        RNG, so the search never settles on a count the chain cannot fill."""
        pool = self._numbers
        num_dicts = max(num_dicts, self.hops)
        chain: list[str] = []
        while len(chain) < self.hops + 1:
            x = pool.one(rng)
            if x not in chain:
                chain.append(x)
        banned = set(chain)
        others = [p for p in range(num_dicts) if p != gold_position]
        hop_positions = [gold_position, *rng.sample(others, self.hops - 1)]
        hop_of = {p: i for i, p in enumerate(hop_positions)}
        lo, hi = self.dict_size_range
        span = hi - lo + 1
        sizes = [
            self.gold_dict_size - 1 if p in hop_of else lo + int(rng.random() * span)
            for p in range(num_dicts)
        ]
        n = sum(sizes)
        ks, vs = pool.draw(rng, n), pool.draw(rng, n)
        # No distractor key or value is a chain number: each chain key occurs once as a key,
        # the final value never does, and the chain cannot be entered or left elsewhere.
        for i in range(n):
            while ks[i] in banned:
                ks[i] = pool.one(rng)
            while vs[i] in banned:
                vs[i] = pool.one(rng)
        bodies = []
        s = 0
        for p, size in enumerate(sizes):
            pairs = list(zip(ks[s : s + size], vs[s : s + size]))
            s += size
            if p in hop_of:
                i = hop_of[p]
                pairs.insert(rng.randrange(self.gold_dict_size), (chain[i], chain[i + 1]))
            bodies.append(render_dict(dict(pairs)))
        names = [str(p + 1) for p in hop_positions]
        gold_key, final = chain[0], chain[-1]
        steps = [(chain[i], chain[i + 1], names[i]) for i in range(self.hops)]
        template = _answer(
            [(gold_key if i == 0 else FILL_KEY, FILL_VALUE, FILL_DICT) for i in range(self.hops)],
            FILL_VALUE,
        )
        prompt = load_prompt(self.prompt_name).format(
            dictionaries=dict_lines(bodies), gold_key=gold_key, hops=self.hops, template=template
        )
        return Task(
            prompt,
            _answer(steps, final),
            {
                "gold_position": gold_position,
                "num_dicts": num_dicts,
                "gold_dict_name": names[0],
                "gold_key": int(gold_key),
                "gold_value": int(final),
                "answer_template": self.answer_template,
                "hops": self.hops,
                "chain": [int(x) for x in chain],
                "hop_positions": hop_positions,
                "hop_dict_names": names,
            },
        )
