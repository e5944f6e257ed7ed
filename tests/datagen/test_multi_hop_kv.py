"""multi_hop_kv: the chain is unique, follows through distinct dictionaries, and the answer can be
re-derived by parsing the prompt alone."""

from __future__ import annotations

import random
import re

import pytest
from tests.datagen.generate_twice import generate_twice

from needlework.config import validate
from needlework.datagen.multi_hop_kv import MultiHopKV
from needlework.errors import ConfigError
from needlework.io import read_jsonl

HEAD = "Do a task using the list of dictionaries below.\n\n"
TAIL = (
    "\n\nAbove is a list of dictionaries such that each key and value is an integer, and some "
    "values are also keys of other dictionaries. Start from key {k}: report its value and the "
    "dictionary it is in, then look that value up as a key, and so on, {h} lookups in all. Then "
    "report the final value."
)
STEP = "The value of key {k} is {v} and it is in Dictionary [{d}]."
LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")


def template(key: str, hops: int) -> str:
    steps = [STEP.format(k=key, v="<fill-in-value>", d="<fill-in-dictionary-name>")]
    steps += [
        STEP.format(k="<fill-in-key>", v="<fill-in-value>", d="<fill-in-dictionary-name>")
    ] * (hops - 1)
    return (
        " Answer in the following template:\n" + " ".join(steps) + " The final value is "
        "<fill-in-value>."
    )


def parse(prompt: str, tmpl: bool) -> tuple[list[tuple[str, list[tuple[str, str]]]], str, int]:
    """(name, pairs) per dictionary line, the start key and the hop count; checks every byte."""
    m = re.search(r"Start from key (\d+): .* so on, (\d+) lookups in all", prompt)
    assert m
    key, hops = m.group(1), int(m.group(2))
    tail = TAIL.format(k=key, h=hops) + (template(key, hops) if tmpl else "")
    assert prompt.startswith(HEAD) and prompt.endswith(tail)
    lines = []
    for line in prompt[len(HEAD) : len(prompt) - len(tail)].split("\n"):
        lm = LINE.match(line)
        assert lm, line
        pairs = [tuple(p.split(": ")) for p in lm.group(2).split(", ")]
        assert all(len(p) == 2 for p in pairs), line
        lines.append((lm.group(1), pairs))
    return lines, key, hops


def solve(prompt: str, tmpl: bool) -> tuple[str, list[str], list[str]]:
    """Answer the task from the prompt text: (answer, chain, dictionary names of the hops)."""
    lines, key, hops = parse(prompt, tmpl)
    where = {}
    for name, pairs in lines:
        for k, v in pairs:
            where.setdefault(k, []).append((v, name))
    chain, names = [key], []
    for _ in range(hops):
        assert len(where[chain[-1]]) == 1  # every chain key occurs exactly once as a key
        v, name = where[chain[-1]][0]
        chain.append(v)
        names.append(name)
    assert chain[-1] not in where  # the final value is not a key: the chain really ends
    steps = [STEP.format(k=chain[i], v=chain[i + 1], d=names[i]) for i in range(hops)]
    return " ".join(steps) + f" The final value is {chain[-1]}.", chain, names


@pytest.mark.parametrize("hops, tmpl", [(2, True), (2, False), (3, True), (5, False)])
def test_answer_is_derivable_and_the_chain_is_unique(hops, tmpl):
    gen = MultiHopKV(hops=hops, answer_template=tmpl)
    for seed in range(25):
        rng = random.Random(seed)
        pos = rng.randrange(40)
        t = gen.build(rng, 40, pos)
        answer, chain, names = solve(t.prompt, tmpl)
        assert t.answer == answer
        assert t.meta["chain"] == [int(x) for x in chain] and len(set(chain)) == hops + 1
        assert t.meta["hop_dict_names"] == names and t.meta["gold_dict_name"] == names[0]
        positions = t.meta["hop_positions"]
        assert positions[0] == t.meta["gold_position"] == pos == int(names[0]) - 1
        assert positions == [int(n) - 1 for n in names] and len(set(positions)) == hops
        assert t.meta["gold_key"] == int(chain[0]) and t.meta["gold_value"] == int(chain[-1])
        lines, _, _ = parse(t.prompt, tmpl)
        assert [n for n, _ in lines] == [str(i) for i in range(1, 41)]
        values = [v for _, pairs in lines for _, v in pairs]
        keys = [k for _, pairs in lines for k, _ in pairs]
        for i, x in enumerate(chain):
            assert keys.count(x) == (1 if i < hops else 0)
            assert values.count(x) == (0 if i == 0 else 1)  # no distractor touches the chain
        for name, pairs in lines:
            assert len({k for k, _ in pairs}) == len(pairs)
            size = len(pairs)
            assert (size <= 3) if name in names else (1 <= size <= 4)
        assert all(3 <= len(x) <= 4 and x[0] != "0" for x in keys + values)


def test_template_variants_differ_only_by_the_template():
    for hops in (2, 4):
        a = MultiHopKV(hops=hops, answer_template=True).build(random.Random(3), 9, 4)
        b = MultiHopKV(hops=hops, answer_template=False).build(random.Random(3), 9, 4)
        assert a.answer == b.answer
        assert a.prompt == b.prompt + template(str(a.meta["gold_key"]), hops)
        assert not re.search(r"\{[a-z_]+\}", a.prompt + a.answer)  # no unfilled placeholder


def test_same_seed_same_task_other_seed_differs():
    gen = MultiHopKV(hops=3)
    assert gen.build(random.Random(11), 20, 7) == gen.build(random.Random(11), 20, 7)
    assert gen.build(random.Random(11), 20, 7) != gen.build(random.Random(12), 20, 7)


def test_hop_positions_spread_over_the_prompt():
    seen = set()
    for seed in range(200):
        t = MultiHopKV().build(random.Random(seed), 10, 0)
        seen.add(t.meta["hop_positions"][1])
    assert seen == set(range(1, 10))


def test_probe_below_hops_builds_the_minimal_prompt():
    # the budget search starts at 2 dictionaries: a 3-hop chain then gets its 3
    gen = MultiHopKV(hops=3)
    assert gen.build(random.Random(5), 2, 0) == gen.build(random.Random(5), 3, 0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"hops": 1}, "hops"),
        ({"num_dicts": 2, "hops": 3}, "num_dicts"),
        ({"num_dicts": 1}, "num_dicts"),
        ({"digits": (1, 1), "hops": 5}, "digits"),
        ({"digits": (4, 3)}, "digits"),
        ({"dict_size_range": (4, 3)}, "dict_size_range"),
        ({"gold_dict_size": 0}, "gold_dict_size"),
        ({"frac_0": 2.0}, "frac_0"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        validate(MultiHopKV, kwargs)


def test_generate_end_to_end(tmp_path):
    out = generate_twice(tmp_path, {"name": "multi_hop_kv", "num_dicts": None, "hops": 3}, 1200)
    for split, n in (("train", 4), ("eval", 2)):
        rows = list(read_jsonl(out / "seed0" / f"{split}.jsonl"))
        assert len(rows) == n
        for row in rows:
            prompt, answer = (m["content"] for m in row["messages"])
            meta = row["meta"]
            assert meta["prompt_tokens"] == len(prompt) < 1200 - 20
            assert meta["conversation_tokens"] <= 1200
            assert meta["num_dicts"] >= 3 and meta["hops"] == 3
            assert meta["hop_positions"][0] == meta["gold_position"]
            assert solve(prompt, True)[0] == answer
            assert {"gold_dict_name", "gold_key", "gold_value", "chain", "gold_depth"} <= set(meta)


@pytest.mark.parametrize(
    "budget, says",
    [
        # prompts fit (916-931 < 980): only the whole conversation is over
        (1000, ["6 dicts do not fit", "whole conversations", "need <= max_context_tokens 1000"]),
        (850, ["6 dicts do not fit", "prompts take", "not even num_dicts=2 fits"]),
    ],
)
def test_budget_error_names_the_failing_quantity_and_the_users_count(budget, says):
    """The message quotes what breaks the budget (prompt or whole conversation) and the
    num_dicts the user set, not a prompt range that fits or num_dicts=2."""
    from needlework.datagen.budget import Budget, check_fixed
    from needlework.errors import UserError
    from needlework.tokenization import load_counter

    with pytest.raises(UserError) as err:
        check_fixed(MultiHopKV(num_dicts=6), load_counter("char"), Budget(budget, 20), 6, key="k:0")
    text = str(err.value)
    assert "\n" not in text and text.startswith("generator.num_dicts: ")
    for part in says:
        assert part in text, text
    if budget == 1000:
        assert "prompts take" not in text, text
