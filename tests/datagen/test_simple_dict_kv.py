"""simple_dict_kv: byte-exact texts (spec §2.1.1-2.1.4) and the official generator's rules."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from needlework.config import validate
from needlework.datagen.base import load_prompt
from needlework.datagen.dicts import gold_position_plan
from needlework.datagen.simple_dict_kv import SimpleDictKV
from needlework.errors import ConfigError

# Spec §2.1.1 / §2.1.2 / §2.1.3, typed in from the spec (not from our prompt files).
HEAD = "Do a task using the list of dictionaries below.\n\n"
TAIL = (
    "\n\nAbove is a list of dictionaries such that each key and value is an integer. "
    "Report the value of key {k} and the dictionary it is in."
)
TEMPLATE = (
    " Answer in the following template:\nThe value of key {k} is <fill-in-value> and it "
    "is in Dictionary [<fill-in-dictionary-name>]."
)
ANSWER = "The value of key {k} is {v} and it is in Dictionary [{d}]."
LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")


def parse(prompt: str, template: bool) -> tuple[list[tuple[str, list[tuple[str, str]]]], str]:
    """Split a prompt back into (name, pairs) lines and the asked key, checking every byte."""
    assert prompt.startswith(HEAD)
    m = re.search(r"Report the value of key (\d+) and", prompt)
    key = m.group(1)
    tail = TAIL.format(k=key) + (TEMPLATE.format(k=key) if template else "")
    assert prompt.endswith(tail)
    body = prompt[len(HEAD) : len(prompt) - len(tail)]
    lines = []
    for line in body.split("\n"):
        lm = LINE.match(line)
        assert lm, line
        pairs = [tuple(p.split(": ")) for p in lm.group(2).split(", ")]
        assert all(len(p) == 2 for p in pairs), line
        lines.append((lm.group(1), pairs))
    return lines, key


def test_golden_sample_with_template():
    t = SimpleDictKV().build(random.Random(7), 4, 2)
    assert t.prompt == (
        "Do a task using the list of dictionaries below.\n\n"
        "Dictionary [1] {1133: 9572, 774: 938, 705: 7452, 457: 812}\n"
        "Dictionary [2] {832: 896, 541: 420, 6883: 252}\n"
        "Dictionary [3] {528: 115, 382: 2387, 243: 940}\n"
        "Dictionary [4] {503: 1859, 518: 653, 3293: 2468, 9058: 3500}\n\n"
        "Above is a list of dictionaries such that each key and value is an integer. Report the "
        "value of key 528 and the dictionary it is in. Answer in the following template:\n"
        "The value of key 528 is <fill-in-value> and it is in Dictionary "
        "[<fill-in-dictionary-name>]."
    )
    assert t.answer == "The value of key 528 is 115 and it is in Dictionary [3]."
    assert t.meta["gold_dict_name"] == "3" and t.meta["gold_key"] == 528


def test_templates_differ_only_in_the_prompt_tail():
    a = SimpleDictKV(answer_template=True).build(random.Random(3), 6, 4)
    b = SimpleDictKV(answer_template=False).build(random.Random(3), 6, 4)
    assert a.answer == b.answer  # both official .answer files are identical
    assert a.prompt == b.prompt + TEMPLATE.format(k=a.meta["gold_key"])
    key = b.meta["gold_key"]
    assert b.prompt.endswith(f"Report the value of key {key} and the dictionary it is in.")


def test_prompt_files_hide_the_placeholder_spelling():
    raw = load_prompt("simple_dict_kv")
    assert "{disctionaries}" in raw  # the official placeholder, internal only
    t = SimpleDictKV().build(random.Random(0), 5, 0)
    assert "disctionaries" not in t.prompt
    assert not re.search(r"\{[a-z_]+\}", t.prompt + t.answer)


@pytest.mark.parametrize("template", [True, False])
def test_structure_of_paper_sized_prompts(template):
    gen = SimpleDictKV(answer_template=template)
    for seed in range(40):
        rng = random.Random(seed)
        pos = rng.randrange(85)
        t = gen.build(rng, 85, pos)
        lines, key = parse(t.prompt, template)
        assert [name for name, _ in lines] == [str(i) for i in range(1, 86)]
        gold_name = str(pos + 1)
        assert t.meta["gold_dict_name"] == gold_name and key == str(t.meta["gold_key"])
        value = str(t.meta["gold_value"])
        assert t.answer == ANSWER.format(k=key, v=value, d=gold_name)
        keys = [k for _, pairs in lines for k, _ in pairs]
        values = [v for _, pairs in lines for _, v in pairs]
        assert keys.count(key) == 1 and values.count(value) == 1  # each exactly once
        assert (key, value) in dict(lines)[gold_name]
        for name, pairs in lines:
            assert len({k for k, _ in pairs}) == len(pairs)  # dict semantics: unique keys
            if name == gold_name:
                assert len(pairs) <= 3 and len(pairs) == t.meta["gold_dict_size"]
            else:
                assert 1 <= len(pairs) <= 4
        for number in keys + values:
            assert 100 <= int(number) <= 9999 and not number.startswith("0")


def test_size_and_digit_distributions():
    gen = SimpleDictKV()
    sizes, digits = Counter(), Counter()
    for seed in range(60):
        lines, _ = parse(gen.build(random.Random(seed), 85, 0).prompt, True)
        sizes.update(len(p) for name, p in lines if name != "1")
        digits.update(len(k) for _, p in lines for k, _ in p)
    assert set(sizes) <= {2, 3, 4} and sizes[2] < 0.01 * sum(sizes.values())
    assert 0.45 < sizes[3] / (sizes[3] + sizes[4]) < 0.55  # randint(3, 4)
    assert set(digits) == {3, 4} and 0.45 < digits[3] / sum(digits.values()) < 0.55


def test_gold_dict_has_three_pairs_with_the_gold_key_anywhere():
    slots, sizes = Counter(), Counter()
    for seed in range(300):
        t = SimpleDictKV().build(random.Random(seed), 3, 1)
        sizes[t.meta["gold_dict_size"]] += 1
        slots[t.meta["gold_key_slot"]] += 1
    assert set(sizes) <= {2, 3} and sizes[3] >= 295  # a key collision may shrink it (rare)
    assert set(slots) == {0, 1, 2} and min(slots.values()) > 60


@pytest.mark.parametrize("n, n0, n5, top", [(350, 17, 10, 17), (150, 7, 4, 7)])
def test_frac_0_and_frac_top5_as_the_official_code(n, n0, n5, top):
    for seed in range(5):
        plan = gold_position_plan(random.Random(seed), n, 85, 0.05, 0.03)
        assert len(plan.forced_first) == n0 and len(plan.front) == n5
        assert not set(plan.forced_first) & set(plan.front)
        assert all(plan.positions[i] == 0 for i in plan.forced_first)
        assert all(0 <= plan.positions[i] < top for i in plan.front)  # 0..16 / 0..6 quirk
        assert all(0 <= p < 85 for p in plan.positions)
    # the rest stays uniform over all 85 positions
    many = [
        p for s in range(40) for p in gold_position_plan(random.Random(s), 350, 85, 0, 0).positions
    ]
    assert max(many) == 84 and min(many) == 0 and 40 < sum(many) / len(many) < 44


def test_front_range_is_clamped_to_num_dicts():
    plan = gold_position_plan(random.Random(0), 350, 5, 0.05, 0.03)
    assert all(p < 5 for p in plan.positions)


@pytest.mark.parametrize(
    "field, value",
    [
        ("dict_size_range", (4, 3)),
        ("key_digits", (0, 3)),
        ("value_digits", (5, 4)),
        ("num_dicts", 1),
        ("gold_dict_size", 0),
        ("frac_0", 1.5),
        ("frac_top5", 0.99),
    ],
)
def test_contradictory_fields_name_themselves(field, value):
    kwargs = {field: value}
    if field == "frac_top5":
        kwargs["frac_0"] = 0.05
    with pytest.raises(ConfigError, match=rf"field '{field}(\.0)?'"):  # a range's bound: .0
        validate(SimpleDictKV, kwargs)
