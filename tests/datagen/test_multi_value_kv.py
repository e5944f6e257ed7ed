"""multi_value_kv: the gold key occurs in exactly ``occurrences`` dictionaries, the values are
listed in prompt order, and the answer can be re-derived by parsing the prompt alone."""

from __future__ import annotations

import random
import re

import pytest
from tests.datagen.generate_twice import generate_twice

from needlework.config import validate
from needlework.datagen.multi_value_kv import MultiValueKV
from needlework.errors import ConfigError
from needlework.io import read_jsonl

HEAD = "Do a task using the list of dictionaries below.\n\n"
TAIL = (
    "\n\nAbove is a list of dictionaries such that each key and value is an integer. Key {k} "
    "occurs in {n} of the dictionaries, each time with a different value. Report all its values, "
    "in the order the dictionaries appear, and the dictionary each is in."
)
ITEM = "{v} (Dictionary [{d}])"
LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")


def template(key: str, n: int) -> str:
    items = ", ".join([ITEM.format(v="<fill-in-value>", d="<fill-in-dictionary-name>")] * n)
    return f" Answer in the following template:\nThe values of key {key} are {items}."


def parse(prompt: str, tmpl: bool):
    m = re.search(r"Key (\d+) occurs in (\d+) of the dictionaries", prompt)
    assert m
    key, n = m.group(1), int(m.group(2))
    tail = TAIL.format(k=key, n=n) + (template(key, n) if tmpl else "")
    assert prompt.startswith(HEAD) and prompt.endswith(tail)
    lines = []
    for line in prompt[len(HEAD) : len(prompt) - len(tail)].split("\n"):
        lm = LINE.match(line)
        assert lm, line
        pairs = [tuple(p.split(": ")) for p in lm.group(2).split(", ")]
        assert all(len(p) == 2 for p in pairs), line
        lines.append((lm.group(1), pairs))
    return lines, key, n


def solve(prompt: str, tmpl: bool) -> tuple[str, list[tuple[str, str]]]:
    """Answer from the prompt text: (answer, [(value, dictionary name)] in prompt order)."""
    lines, key, n = parse(prompt, tmpl)
    found = [(v, name) for name, pairs in lines for k, v in pairs if k == key]
    assert len(found) == n  # exactly the announced number of occurrences
    items = ", ".join(ITEM.format(v=v, d=d) for v, d in found)
    return f"The values of key {key} are {items}.", found


@pytest.mark.parametrize("occ, tmpl", [(2, True), (3, True), (3, False), (6, False)])
def test_answer_is_derivable_and_occurrences_are_ordered(occ, tmpl):
    gen = MultiValueKV(occurrences=occ, answer_template=tmpl)
    for seed in range(25):
        rng = random.Random(seed)
        pos = rng.randrange(40)
        t = gen.build(rng, 40, pos)
        answer, found = solve(t.prompt, tmpl)
        assert t.answer == answer
        values = [v for v, _ in found]
        names = [d for _, d in found]
        assert len(set(values)) == occ and len(set(names)) == occ  # distinct values and dicts
        assert t.meta["gold_values"] == [int(v) for v in values]
        assert t.meta["gold_positions"] == [int(d) - 1 for d in names]
        assert t.meta["gold_positions"] == sorted(t.meta["gold_positions"])
        assert pos in t.meta["gold_positions"] and t.meta["gold_position"] == pos
        assert t.meta["first_position"] == t.meta["gold_positions"][0]
        at = t.meta["gold_positions"].index(pos)
        assert t.meta["gold_dict_name"] == str(pos + 1) and t.meta["gold_value"] == int(values[at])
        lines, key, _ = parse(t.prompt, tmpl)
        assert key == str(t.meta["gold_key"])
        assert [n for n, _ in lines] == [str(i) for i in range(1, 41)]
        all_values = [v for _, pairs in lines for _, v in pairs]
        assert all(all_values.count(v) == 1 for v in values)  # gold values occur once each
        for name, pairs in lines:
            assert len({k for k, _ in pairs}) == len(pairs)
            assert [k for k, _ in pairs].count(key) == (1 if name in names else 0)
            assert (len(pairs) <= 3) if name in names else (1 <= len(pairs) <= 4)


def test_the_last_position_is_an_occurrence_too():
    gen = MultiValueKV(occurrences=3)
    for pos in (8, 9):
        t = gen.build(random.Random(pos), 10, pos)
        assert pos in t.meta["gold_positions"] and len(t.meta["gold_positions"]) == 3
        assert solve(t.prompt, True)[0] == t.answer


def test_other_occurrences_spread_over_every_other_position():
    seen = set()
    for seed in range(200):
        t = MultiValueKV(occurrences=2).build(random.Random(seed), 10, 2)
        seen.update(p for p in t.meta["gold_positions"] if p != 2)
    assert seen == set(range(10)) - {2}


def test_template_variants_differ_only_by_the_template():
    a = MultiValueKV(answer_template=True).build(random.Random(3), 9, 2)
    b = MultiValueKV(answer_template=False).build(random.Random(3), 9, 2)
    assert a.answer == b.answer
    assert a.prompt == b.prompt + template(str(a.meta["gold_key"]), 3)
    assert not re.search(r"\{[a-z_]+\}", a.prompt + a.answer)


def test_same_seed_same_task_other_seed_differs():
    gen = MultiValueKV()
    assert gen.build(random.Random(11), 20, 7) == gen.build(random.Random(11), 20, 7)
    assert gen.build(random.Random(11), 20, 7) != gen.build(random.Random(12), 20, 7)


def test_probe_below_occurrences_builds_the_minimal_prompt():
    gen = MultiValueKV(occurrences=4)
    assert gen.build(random.Random(5), 2, 0) == gen.build(random.Random(5), 4, 0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"occurrences": 1}, "occurrences"),
        ({"num_dicts": 3, "occurrences": 4}, "num_dicts"),
        ({"value_digits": (1, 1), "occurrences": 5}, "value_digits"),
        ({"key_digits": (0, 3)}, "key_digits.0"),
        ({"dict_size_range": (4, 3)}, "dict_size_range"),
        ({"frac_top5": 0.99, "frac_0": 0.05}, "frac_top5"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        validate(MultiValueKV, kwargs)


def test_generate_end_to_end(tmp_path):
    out = generate_twice(tmp_path, {"name": "multi_value_kv", "num_dicts": None}, 1000)
    for split, n in (("train", 4), ("eval", 2)):
        rows = list(read_jsonl(out / "seed0" / f"{split}.jsonl"))
        assert len(rows) == n
        for row in rows:
            prompt, answer = (m["content"] for m in row["messages"])
            meta = row["meta"]
            assert meta["prompt_tokens"] == len(prompt) < 1000 - 20
            assert meta["conversation_tokens"] <= 1000
            assert meta["gold_position"] in meta["gold_positions"]
            assert meta["first_position"] == meta["gold_positions"][0]
            assert len(meta["gold_values"]) == 3
            assert solve(prompt, True)[0] == answer
            assert {"gold_dict_name", "gold_key", "gold_value", "gold_depth"} <= set(meta)
