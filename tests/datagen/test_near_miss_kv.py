"""near_miss_kv: the placed near misses differ from the gold key in exactly ``differ_digits``
positions, sit outside the gold dictionary, and the answer can be re-derived from the prompt."""

from __future__ import annotations

import random
import re

import pytest
from tests.datagen.generate_twice import generate_twice

from needlework.config import validate
from needlework.datagen.near_miss_kv import NearMissKV, near_miss_total
from needlework.errors import ConfigError
from needlework.io import read_jsonl

HEAD = "Do a task using the list of dictionaries below.\n\n"
TAIL = (
    "\n\nAbove is a list of dictionaries such that each key and value is an integer. Report the "
    "value of the key that is exactly {k} and the dictionary it is in."
)
TEMPLATE = (
    " Answer in the following template:\nThe value of key {k} is <fill-in-value> and it is in "
    "Dictionary [<fill-in-dictionary-name>]."
)
ANSWER = "The value of key {k} is {v} and it is in Dictionary [{d}]."
LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")


def parse(prompt: str, tmpl: bool):
    m = re.search(r"the key that is exactly (\d+) and", prompt)
    assert m
    key = m.group(1)
    tail = TAIL.format(k=key) + (TEMPLATE.format(k=key) if tmpl else "")
    assert prompt.startswith(HEAD) and prompt.endswith(tail)
    lines = []
    for line in prompt[len(HEAD) : len(prompt) - len(tail)].split("\n"):
        lm = LINE.match(line)
        assert lm, line
        pairs = [tuple(p.split(": ")) for p in lm.group(2).split(", ")]
        assert all(len(p) == 2 for p in pairs), line
        lines.append((lm.group(1), pairs))
    return lines, key


def hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b)) if len(a) == len(b) else -1


def solve(prompt: str, tmpl: bool) -> str:
    lines, key = parse(prompt, tmpl)
    found = [(v, name) for name, pairs in lines for k, v in pairs if k == key]
    assert len(found) == 1  # the gold key occurs exactly once
    return ANSWER.format(k=key, v=found[0][0], d=found[0][1])


@pytest.mark.parametrize(
    "differ, count, tmpl", [(1, 5, True), (1, 5, False), (2, 12, True), (1, 26, False)]
)
def test_near_misses_differ_in_exactly_the_configured_digits(differ, count, tmpl):
    gen = NearMissKV(differ_digits=differ, near_miss_count=count, answer_template=tmpl)
    for seed in range(25):
        rng = random.Random(seed)
        pos = rng.randrange(40)
        t = gen.build(rng, 40, pos)
        assert t.answer == solve(t.prompt, tmpl)
        lines, key = parse(t.prompt, tmpl)
        assert key == str(t.meta["gold_key"])
        name = str(pos + 1)
        assert t.meta["gold_dict_name"] == name and t.meta["gold_position"] == pos
        assert (key, str(t.meta["gold_value"])) in lines[pos][1]
        near = [str(k) for k in t.meta["near_miss_keys"]]
        assert len(near) == count and len(set(near)) == count and key not in near
        assert all(hamming(k, key) == differ and k[0] != "0" for k in near)
        where = [(i, k) for i, (_, pairs) in enumerate(lines) for k, _ in pairs]
        assert [i for i, k in where if k in near] == t.meta["near_miss_positions"]
        assert [k for _, k in where if k in near] == near  # in prompt order, each once
        assert pos not in t.meta["near_miss_positions"]  # never in the gold dictionary
        # no other key is as close: the placed near misses are all the near misses
        close = [k for _, k in where if 0 < hamming(k, key) <= differ]
        assert sorted(close) == sorted(near)
        values = [v for _, pairs in lines for _, v in pairs]
        assert values.count(str(t.meta["gold_value"])) == 1
        for n, pairs in lines:
            assert len({k for k, _ in pairs}) == len(pairs)
            assert (len(pairs) <= 3) if n == name else (1 <= len(pairs) <= 4)


def test_near_misses_spread_over_digit_positions_and_dictionaries():
    changed, spots = set(), set()
    for seed in range(100):
        t = NearMissKV().build(random.Random(seed), 10, 4)
        gold = str(t.meta["gold_key"])
        for k in map(str, t.meta["near_miss_keys"]):
            changed.update(i for i, (a, b) in enumerate(zip(k, gold)) if a != b)
        spots.update(t.meta["near_miss_positions"])
    assert changed == {0, 1, 2, 3} and spots == set(range(10)) - {4}


def test_small_prompts_place_as_many_as_fit():
    t = NearMissKV(near_miss_count=10).build(random.Random(0), 2, 1)
    assert 1 <= len(t.meta["near_miss_keys"]) <= 4 and set(t.meta["near_miss_positions"]) == {0}


def test_near_miss_total_counts_every_neighbour():
    for digits in (2, 3):
        for differ in (1, 2):
            gold = "7" * digits
            brute = sum(
                1
                for x in range(10 ** (digits - 1), 10**digits)
                if sum(a != b for a, b in zip(str(x), gold)) == differ
            )
            assert near_miss_total(digits, differ) == brute


def test_template_variants_differ_only_by_the_template():
    a = NearMissKV(answer_template=True).build(random.Random(3), 9, 4)
    b = NearMissKV(answer_template=False).build(random.Random(3), 9, 4)
    assert a.answer == b.answer
    assert a.prompt == b.prompt + TEMPLATE.format(k=a.meta["gold_key"])


def test_same_seed_same_task_other_seed_differs():
    gen = NearMissKV()
    assert gen.build(random.Random(11), 20, 7) == gen.build(random.Random(11), 20, 7)
    assert gen.build(random.Random(11), 20, 7) != gen.build(random.Random(12), 20, 7)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"differ_digits": 0}, "differ_digits"),
        ({"differ_digits": 3}, "differ_digits"),
        ({"near_miss_count": 0}, "near_miss_count"),
        ({"near_miss_count": 27}, "near_miss_count"),
        ({"num_dicts": 2, "near_miss_count": 5}, "near_miss_count"),
        ({"num_dicts": 1}, "num_dicts"),
        ({"key_digits": (4, 3)}, "key_digits"),
        ({"key_digits": (1, 1)}, "key_digits.0"),
        ({"key_digits": (1, 3)}, "key_digits.0"),
        ({"dict_size_range": (4, 3)}, "dict_size_range"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        validate(NearMissKV, kwargs)


def test_generate_end_to_end(tmp_path):
    out = generate_twice(tmp_path, {"name": "near_miss_kv", "num_dicts": None}, 900)
    for split, n in (("train", 4), ("eval", 2)):
        rows = list(read_jsonl(out / "seed0" / f"{split}.jsonl"))
        assert len(rows) == n
        for row in rows:
            prompt, answer = (m["content"] for m in row["messages"])
            meta = row["meta"]
            assert meta["prompt_tokens"] == len(prompt) < 900 - 20
            assert meta["conversation_tokens"] <= 900
            assert solve(prompt, True) == answer
            assert len(meta["near_miss_keys"]) == len(meta["near_miss_positions"]) == 5
            assert {"gold_dict_name", "gold_key", "gold_value", "gold_depth"} <= set(meta)


def test_one_digit_keys_say_key_digits_needs_two():
    """Not the empty range 'differ_digits: must be in [1, 0]' of the hostile sweep."""
    with pytest.raises(
        ConfigError, match=r"field 'key_digits.0': expected greater than or equal to 2, got 1"
    ):
        validate(NearMissKV, {"key_digits": (1, 1)})
