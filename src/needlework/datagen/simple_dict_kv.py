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
from dataclasses import dataclass
from typing import ClassVar

from needlework.datagen.base import Slot, Task, load_prompt
from needlework.datagen.dicts import (
    NumberPool,
    check_dict_task,
    dict_lines,
    number_pool,
    render_bodies,
)
from needlework.registry import generators


@generators.register("simple_dict_kv")
@dataclass(frozen=True)
class SimpleDictKV:
    """Integer key -> integer value dictionaries; find one key's value and dictionary."""

    num_dicts: int | None = 85
    """Dictionaries per prompt (paper: 85 at 4K); null = as many as fit max_context_tokens."""
    gold_dict_size: int = 3
    """Pairs in the gold dictionary (paper: 3)."""
    dict_size_range: tuple[int, int] = (3, 4)
    """Pairs in each other dictionary, inclusive (paper: randint(3, 4))."""
    key_digits: tuple[int, int] = (3, 4)
    """Digit count of keys, inclusive (paper: 3-4 digits, i.e. 100..9999)."""
    value_digits: tuple[int, int] = (3, 4)
    """Digit count of values, inclusive (paper: 3-4 digits)."""
    answer_template: bool = True
    """Append the answer template to the prompt (the paper trains both variants)."""
    frac_0: float = 0.05
    """Fraction of samples per split with the gold dictionary forced first (paper: 0.05)."""
    frac_top5: float = 0.03
    """Further fraction with the gold dictionary in the first int(N*0.05) positions (paper: 0.03;
    N = samples in the split, the official quirk)."""

    def __post_init__(self) -> None:
        check_dict_task(
            num_dicts=self.num_dicts,
            gold_dict_size=self.gold_dict_size,
            dict_size_range=self.dict_size_range,
            digits={"key_digits": self.key_digits, "value_digits": self.value_digits},
            frac_0=self.frac_0,
            frac_top5=self.frac_top5,
        )
        object.__setattr__(self, "_keys", number_pool(*self.key_digits))
        object.__setattr__(self, "_values", number_pool(*self.value_digits))

    @property
    def prompt_name(self) -> str:
        return "simple_dict_kv_wtemplate" if self.answer_template else "simple_dict_kv"

    unit: ClassVar[str] = "dicts"

    @property
    def num_units(self) -> int | None:
        return self.num_dicts

    def build(
        self, rng: random.Random, num_dicts: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        keys: NumberPool = self._keys  # type: ignore[attr-defined]
        vals: NumberPool = self._values  # type: ignore[attr-defined]
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
