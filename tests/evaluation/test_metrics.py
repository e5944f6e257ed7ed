"""Golden cases for the pure metrics, from the reference rules (spec §6.1, §6.2; flenqa.md)."""

from __future__ import annotations

import re
import string

import pytest

from needlework.evaluation import metrics as m
from needlework.sources.answers import contains_answer

# --------------------------------------------------------------- Lost in the Middle / SQuAD


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cat", "cat"),
        ("an apple a day", "apple day"),
        ("Hello, World!", "hello world"),
        ("U.S.A.", "usa"),
        ("It's 1,000 km", "its 1000 km"),
        ("theatre and anthem", "theatre and anthem"),  # articles only as whole words
        ("the-cat", "thecat"),  # punctuation goes first, so no article is left to remove
        ("  The  answer\tis\n42 ", "answer is 42"),
        ("Wilhelm Conrad Röntgen", "wilhelm conrad röntgen"),  # non-ASCII letters stay
        ("rock–and–roll “quoted”", "rock–and–roll “quoted”"),  # only ASCII punctuation goes
        ("A", ""),
        ("", ""),
    ],
)
def test_normalize_answer_golden(text, expected):
    assert m.normalize_answer(text) == expected


def test_regex_and_re_agree_on_article_removal():
    # The reference uses the third-party ``regex`` module; the stdlib must give the same result.
    def with_stdlib_re(text: str) -> str:
        text = "".join(c for c in text.lower() if c not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    for text in ["a théâtre the ångström an", "l'a the_a a1 the", "Ä a ä the ÿ an", "ｔｈｅ a"]:
        assert m.normalize_answer(text) == with_stdlib_re(text)


@pytest.mark.parametrize(
    "prediction, truths, expected",
    [
        ("Wilhelm Conrad Röntgen won it", ["Wilhelm Conrad Röntgen"], 1.0),
        ("Röntgen", ["Wilhelm Conrad Röntgen"], 0.0),  # the gold must be inside the prediction
        ("The answer is 1342.", ["1342"], 1.0),
        ("in 13 42", ["1342"], 0.0),
        ("19011", ["1901"], 1.0),  # substring, not token match
        ("PARIS!", ["paris"], 1.0),
        ("the Beatles", ["The Beatles"], 1.0),
        ("nothing", ["Brevik", "Ossa"], 0.0),
        ("it was Ossa", ["Brevik", "Ossa"], 1.0),
        ("anything at all", ["The"], 1.0),  # reference quirk: "" is in every string
        ("", ["x"], 0.0),
    ],
)
def test_best_subspan_em_golden(prediction, truths, expected):
    assert m.best_subspan_em(prediction, truths) == expected


def test_first_line_rule():
    assert m.first_line("  Paris \nbecause Document [3] says Paris") == "Paris"
    assert m.best_subspan_em(m.first_line("I am not sure.\nParis"), ["Paris"]) == 0.0
    assert m.best_subspan_em(m.first_line("Paris\nno"), ["Paris"]) == 1.0
    assert m.first_line("") == ""


def test_exact_match():
    assert m.exact_match("The Paris.", ["paris"]) == 1.0
    assert m.exact_match("Paris, France", ["paris"]) == 0.0


def test_kv_substring_match():
    value = "6fe9e015-9e9c-46be-8a31-9e1d22719910"
    assert m.kv_substring_match(value, f'The value is "{value.upper()}".') == 1.0
    assert m.kv_substring_match(value, value[:-1]) == 0.0


def test_contains_answer_uses_metric_normalisation():
    assert contains_answer("Founded in 1,851 by students", ["1851"])
    assert contains_answer("THE HARROW boat-club", ["Harrow Boat club"]) is False  # "boatclub"
    assert not contains_answer("anything", ["the"])  # empty answers never exclude a passage


# -------------------------------------------------------------------------------------- FLenQA


@pytest.mark.parametrize(
    "response, category",
    [
        ("True", "true"),
        ("False.", "false"),  # punctuation quirk: the period stays, "false" is still found
        ("true.", "true"),
        ("TRUE!", "true"),
        ("It is not true that Ben is older.", "false"),
        ("not True", "false"),
        ("untrue", "true"),  # substring quirk
        ("That is a falsehood", "false"),
        ("True or False? The answer is False", "false"),  # the last mention wins
        ("False, wait: it is true", "true"),
        ("The statement is not true, so it's not not true", "false"),
        ("I cannot answer that.", "other/refused"),
        ("", "other/refused"),
        ("yes", "other/refused"),
    ],
)
def test_flenqa_category_golden(response, category):
    assert m.flenqa_category(response) == category


def test_flenqa_category_non_strings():
    assert m.flenqa_category(True) == "true"
    assert m.flenqa_category(False) == "false"
    assert m.flenqa_category(None) == "other/refused"
    assert m.flenqa_category(3) == "other/refused"


def test_flenqa_normalize_keeps_punctuation():
    assert m.flenqa_normalize("The answer: True.") == "answer: true."
    assert m.flenqa_normalize("Hello,   World!") == "hello, world!"
    # only the whole 32-character block (in one set order) would be removed, never single marks
    shuffled = string.punctuation[::-1]
    assert m.flenqa_normalize(f"x {shuffled} y") == f"x {shuffled} y"
    block = "".join(sorted(set(string.punctuation)))
    assert m.flenqa_normalize(f"x{block}y") == "xy"


@pytest.mark.parametrize(
    "response, label, correct",
    [
        ("False", "False", True),
        ("false.", "False", True),
        ("True", "False", False),
        ("I refuse", "False", False),  # other/refused is never correct
        ("It is true.", "True", True),
        ("untrue", "False", False),  # counted as "true"
        ("The answer is: not true", "False", True),
        ("True", True, True),  # a boolean label is read as its string
    ],
)
def test_flenqa_correct_golden(response, label, correct):
    assert m.flenqa_correct(response, label) is correct


def test_flenqa_cot_extras():
    facts = ["Anna is in the kitchen.", "Anna is holding a blue cup."]
    response = "Step 1: Anna is in the kitchen. Step 2: Anna is holding a blue cup. So True."
    assert m.flenqa_cot_coverage(response, facts) == 2
    assert m.flenqa_cot_coverage("Anna is in the garden. True", facts) == 0
    assert m.flenqa_cot_coverage("ANNA IS IN A KITCHEN.", facts) == 1  # articles normalised away
    assert m.flenqa_early_response("True. Because Anna is in the kitchen.") is True
    assert m.flenqa_early_response("Let me think step by step. True") is False
    assert m.flenqa_early_response("I do not know") is False


# ------------------------------------------------------------------- synthetic dictionary task


@pytest.mark.parametrize(
    "output, key, value, name",
    [
        ("The value of key 365 is 7634 and it is in Dictionary [32].", [365], "7634", "32"),
        ("7634", [365], "7634", None),
        ("Key 365: value 7634, in dictionary 32", [365], "7634", "32"),
        ("The value of key 365 is 365 and it is in Dictionary [2].", [365], "365", "2"),
        ("7634 is the value of key 365", [365], "7634", None),
        ("Dictionary [12] holds key 365 with 7634.", [365], "7634", "12"),
        ("The value of key 365 is 0042 and it is in Dictionary [Alpha].", [365], "42", "Alpha"),
        (
            "The key that contains the integers 616, 141, 623 is (141, 623, 616). Its value is "
            "5617 and it is in Dictionary [6].",
            [141, 623, 616],
            "5617",
            "6",
        ),
        ("I don't know.", [365], None, None),
        ("The value of key 365 is 11 22 33", [365], "11", None),  # only the first number counts
    ],
)
def test_parse_kv_answer_golden(output, key, value, name):
    parsed = m.parse_kv_answer(output, key)
    assert (parsed.value, parsed.dict_name) == (value, name)


def test_kv_helpers():
    assert m.numbers_in_key("365") == [365]
    assert m.numbers_in_key([141, 623, 616]) == [141, 623, 616]
    assert m.numbers_in_key("(141, 623, 616)") == [141, 623, 616]
    assert m.same_value("42", "0042") and not m.same_value(None, 42)
    assert m.same_value("abc", " abc ") and not m.same_value("41", 42)


@pytest.mark.parametrize(
    "depth, bins, edge", [(0.0, 10, 0.0), (1.0, 10, 0.9), (0.55, 10, 0.5), (0.999, 4, 0.75)]
)
def test_depth_bin(depth, bins, edge):
    assert m.depth_bin(depth, bins) == edge


def test_format_match_ignores_numbers_but_not_wording():
    from needlework.evaluation.metrics import format_match

    ref = "The value of key 365 is 7634 and it is in Dictionary [32]."
    assert format_match("The value of key 1 is 22 and it is in Dictionary [4].", ref) == 1.0
    assert format_match(ref + "\nextra line", ref) == 1.0
    assert format_match("The value of key 1 is 22 and it is in Dictionary 4.", ref) == 0.0
    assert format_match("7634", ref) == 0.0


# ------------------------------------------------------------------- hallucination (metrics.py)

from needlework.evaluation.metrics import (  # noqa: E402
    is_abstention,
    unsupported_answer,
    wrong_answer,
)

DOCS = (
    "Document [1](Title: Mill) The river bends twice before it reaches the old mill.\n"
    "Document [2](Title: Paris) Paris is the capital and most populous city of France."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("  ", True),
        ("I don't know.", True),
        ("I do not know the answer", True),
        ("Unknown", True),
        ("None of the documents say.", True),
        ("The answer is not mentioned in the documents", False),  # a lead-in, then a claim
        ("Not mentioned.", True),
        ("unanswerable", True),
        ("Noneville", False),  # a word that merely starts like a phrase
        ("Paris", False),
        ("nonetheless, Paris", False),
    ],
)
def test_is_abstention_golden(text, expected):
    assert is_abstention(text) is expected


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Paris", ["Paris"], 0.0),  # correct is never unsupported
        ("Lyon", ["Paris"], 1.0),  # wrong and in no document
        ("the old mill", ["Paris"], 0.0),  # wrong but copied from a document
        ("Answer: the river", ["Paris"], 0.0),  # lead-in stripped, then found
        ("France capital city", ["Berlin"], 0.0),  # every content word is in the documents
        ("France capital Berlin", ["Bonn"], 1.0),  # one content word is not
        ("I don't know", ["Paris"], 0.0),  # an abstention is not a hallucination
        ("", ["Paris"], 0.0),
    ],
)
def test_unsupported_answer_golden(prediction, answers, expected):
    assert unsupported_answer(prediction, answers, DOCS) == expected


def test_wrong_answer_golden():
    assert wrong_answer("Lyon", ["Paris"]) == 1.0
    assert wrong_answer("paris.", ["Paris"]) == 0.0
    assert wrong_answer("I'm not sure", ["Paris"]) == 0.0
