"""multi_subkey_dict_kv: exact texts and the rules of spec §2.3 (shared but never all subkeys)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from needlework.config import validate
from needlework.datagen.multi_subkey_dict_kv import MultiSubkeyDictKV
from needlework.errors import ConfigError

HEAD = "Do a task using the list of dictionaries below.\n\n"
TAIL = (
    "\n\nAbove is a list of dictionaries such that each key is a tuple of integers and each "
    "value is an integer. Report the key that contains the integers {s} (not necessarily in "
    "order), its value, and the dictionary it is in."
)
TEMPLATE = (
    " Answer in the following template:\nThe key that contains the integers {s} is "
    "<fill-in-key>. Its value is <fill-in-value> and it is in Dictionary "
    "[<fill-in-dictionary-name>]."
)
ANSWER = (
    "The key that contains the integers {s} is {k}. Its value is {v} and it is in Dictionary [{d}]."
)
LINE = re.compile(r"^Dictionary \[(\d+)\] \{(.*)\}$")
PAIR = re.compile(r"\(([\d, ]+)\): (\d+)")


def parse(prompt: str, template: bool):
    m = re.search(r"contains the integers ([\d, ]+) \(not necessarily", prompt)
    shown = m.group(1)
    tail = TAIL.format(s=shown) + (TEMPLATE.format(s=shown) if template else "")
    assert prompt.startswith(HEAD) and prompt.endswith(tail)
    lines = []
    for line in prompt[len(HEAD) : len(prompt) - len(tail)].split("\n"):
        lm = LINE.match(line)
        assert lm, line
        pairs = [(tuple(k.split(", ")), v) for k, v in PAIR.findall(lm.group(2))]
        rebuilt = ", ".join(f"({', '.join(k)}): {v}" for k, v in pairs)
        assert rebuilt == lm.group(2), line
        lines.append((lm.group(1), pairs))
    return lines, shown.split(", ")


def test_golden_sample_with_template():
    t = MultiSubkeyDictKV().build(random.Random(7), 3, 1)
    assert t.prompt == (
        "Do a task using the list of dictionaries below.\n\n"
        "Dictionary [1] {(192, 269, 614, 713): 6079, (931, 425, 519): 7290, "
        "(235, 409, 685): 6480}\n"
        "Dictionary [2] {(391, 235, 685): 9187, (685, 595, 235): 9527, (141, 978, 457): 4772}\n"
        "Dictionary [3] {(939, 248, 407): 9658, (615, 887, 382): 6349, "
        "(235, 685, 158, 727): 3561}\n\n"
        "Above is a list of dictionaries such that each key is a tuple of integers and each "
        "value is an integer. Report the key that contains the integers 235, 685, 391 (not "
        "necessarily in order), its value, and the dictionary it is in. Answer in the following "
        "template:\nThe key that contains the integers 235, 685, 391 is <fill-in-key>. Its value "
        "is <fill-in-value> and it is in Dictionary [<fill-in-dictionary-name>]."
    )
    assert t.answer == (
        "The key that contains the integers 235, 685, 391 is (391, 235, 685). "
        "Its value is 9187 and it is in Dictionary [2]."
    )


def test_no_template_variant_differs_only_in_the_prompt_tail():
    a = MultiSubkeyDictKV(answer_template=True).build(random.Random(5), 7, 3)
    b = MultiSubkeyDictKV(answer_template=False).build(random.Random(5), 7, 3)
    shown = ", ".join(map(str, a.meta["gold_subkeys_shown"]))
    assert a.answer == b.answer and a.prompt == b.prompt + TEMPLATE.format(s=shown)


@pytest.mark.parametrize("template", [True, False])
def test_structural_rules(template):
    gen = MultiSubkeyDictKV(answer_template=template)
    shared_some, orders_differ = 0, 0
    for seed in range(40):
        rng = random.Random(seed)
        pos = rng.randrange(49)
        t = gen.build(rng, 49, pos)
        lines, shown = parse(t.prompt, template)
        assert [n for n, _ in lines] == [str(i) for i in range(1, 50)]
        gold = tuple(str(s) for s in t.meta["gold_key"])
        value = str(t.meta["gold_value"])
        name = str(pos + 1)
        assert sorted(shown) == sorted(gold) and len(set(gold)) == len(gold) == 3
        orders_differ += tuple(shown) != gold
        assert t.answer == ANSWER.format(
            s=", ".join(shown), k=f"({', '.join(gold)})", v=value, d=name
        )
        assert (gold, value) in dict(lines)[name]
        all_pairs = [(n, k, v) for n, pairs in lines for k, v in pairs]
        assert sum(1 for _, k, _ in all_pairs if k == gold) == 1
        assert sum(1 for _, _, v in all_pairs if v == value) == 1
        for _name, key, v in all_pairs:
            assert all(len(s) == 3 for s in key) and len(v) == 4
            assert len(set(key)) == len(key)
            if key != gold:
                # never every gold subkey: no permutation and no superset of the gold key
                assert not set(gold) <= set(key), (seed, key, gold)
                assert 3 <= len(key) <= 4
                shared_some += bool(set(gold) & set(key))
        for n, pairs in lines:
            assert (len(pairs) <= 3) if n == name else (1 <= len(pairs) <= 4)
    assert shared_some > 40 * 20  # distractors do share gold subkeys
    assert orders_differ > 20  # the question usually shows another order


def test_distractors_share_up_to_common_subkey_size():
    overlap = Counter()
    for seed in range(30):
        t = MultiSubkeyDictKV(prob_ng_has_common=1.0, prob_ng_per_common=1.0).build(
            random.Random(seed), 10, 0
        )
        overlap[t.meta["max_shared_subkeys"]] += 1
    assert set(overlap) == {2}  # every distractor holds both common subkeys, never the third


def test_superset_is_rejected_even_when_forced():
    # tiny subkey space: random fill would often complete the gold set without the check
    gen = MultiSubkeyDictKV(
        subkey_digits=(1, 1), prob_ng_has_common=1.0, prob_ng_per_common=1.0, key_size_range=(3, 4)
    )
    for seed in range(30):
        t = gen.build(random.Random(seed), 20, 5)
        lines, _ = parse(t.prompt, True)
        gold = {str(s) for s in t.meta["gold_key"]}
        for _, pairs in lines:
            for key, _ in pairs:
                assert key == tuple(str(s) for s in t.meta["gold_key"]) or not gold <= set(key)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"common_subkey_size": 3}, "common_subkey_size"),
        ({"gold_key_size": 1, "common_subkey_size": 0}, "gold_key_size"),
        ({"key_size_range": (2, 4)}, "key_size_range"),
        ({"key_size_range": (4, 3)}, "key_size_range"),
        ({"dict_size_range": (3, 2)}, "dict_size_range"),
        ({"prob_ng_has_common": -0.1}, "prob_ng_has_common"),
        ({"num_dicts": 1}, "num_dicts"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        validate(MultiSubkeyDictKV, kwargs)
