"""Simple dictionary key-value retrieval — the synthetic task of "From Artificial Needles to Real
Haystacks" (Xiong et al., ICLR 2025, arXiv:2406.19292), rebuilt from the official generator
(``edixiong/artificial-needles``, spec §2.1).

Run:  needlework generate --config configs/datagen/simple_dict_kv_mistral_v1_wtemplate.yaml

A prompt lists ``num_dicts`` dictionaries ``Dictionary [i] {key: value, ...}`` of integer keys
and values, and asks for the value of one key and the dictionary holding it. Texts are byte-exact
with the official prompt files; the RNG stream is not (the official one depends on the gated
Llama-2 tokenizer), so parity is structural: same distributions, same rules.
"""

from __future__ import annotations

import random
from typing import ClassVar

from needlework.config import config
from needlework.datagen.base import Slot, Task, load_prompt
from needlework.datagen.dicts import (
    DictTask,
    DigitRange,
    NumberPools,
    dict_lines,
    render_bodies,
)
from needlework.registry import generators


@generators.register("simple_dict_kv")
@config
class SimpleDictKV(DictTask, NumberPools):
    """Integer key -> integer value dictionaries; find one key's value and dictionary."""

    prompt_stem: ClassVar[str] = "simple_dict_kv"

    key_digits: DigitRange = (3, 4)
    """Digit count of keys, inclusive (paper: 3-4 digits, i.e. 100..9999)."""
    value_digits: DigitRange = (3, 4)
    """Digit count of values, inclusive (paper: 3-4 digits)."""

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        keys, vals = self._keys, self._values
        gold_key, gold_value = keys.one(rng), vals.one(rng)
        lo, hi = self.dict_size_range
        span = hi - lo + 1
        sizes = [lo + int(rng.random() * span) for _ in range(num_dicts - 1)]
        n = self.gold_dict_size - 1 + sum(sizes)
        ks, vs = keys.draw(rng, n), vals.draw(rng, n)
        # Every other pair is re-drawn until key != gold key and value != gold value, so the
        # gold key and the gold value each occur exactly once in the prompt.
        if gold_key in ks or gold_value in vs:
            for i in range(n):
                while ks[i] == gold_key or vs[i] == gold_value:
                    ks[i], vs[i] = keys.one(rng), vals.one(rng)
        at = rng.randrange(self.gold_dict_size)
        g = self.gold_dict_size - 1
        # The gold dictionary is built first (official: at index 0), then moved into place.
        gold_ks = [*ks[:at], gold_key, *ks[at:g]]
        gold_vs = [*vs[:at], gold_value, *vs[at:g]]
        bodies = render_bodies(gold_ks + ks[g:], gold_vs + vs[g:], [g + 1, *sizes])
        bodies.insert(gold_position, bodies.pop(0))
        gold_dict = dict(zip(gold_ks, gold_vs))
        prompt = load_prompt(self.prompt_name).format(
            disctionaries=dict_lines(bodies), gold_key_str=gold_key
        )
        name = str(gold_position + 1)
        answer = load_prompt("simple_dict_kv.answer").format(
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
                "gold_dict_size": len(gold_dict),
                "gold_key_slot": list(gold_dict).index(gold_key),
            },
        )
