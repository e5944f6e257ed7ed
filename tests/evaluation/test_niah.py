"""NIAH: the fitting search, exact sizing with real and trivial tokenizers, depth, scoring."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tests.conftest import shared_file

from needlework.errors import ConfigError, DataError
from needlework.evaluation.benchmarks.common import user_turn
from needlework.evaluation.benchmarks.niah import NIAH
from needlework.sources.haystack import (
    FILLER,
    build_needle_item,
    haystack_with_needle,
    largest_fitting,
    split_sentences,
)
from needlework.tokenization import CharCounter, WhitespaceCounter

HAYSTACK = Path(__file__).resolve().parents[1] / "fixtures" / "haystack_tiny.txt"


@pytest.mark.parametrize("limit", [0, 1, 2, 37, 1000])
@pytest.mark.parametrize("hint", [0, 1, 10, 37, 38, 5000])
def test_largest_fitting(limit, hint):
    calls = []

    def fits(n):
        calls.append(n)
        return n <= limit

    assert largest_fitting(fits, hint) == limit
    assert len(calls) <= 2 * (limit + 2).bit_length() + 2 * (abs(hint - limit) + 2).bit_length()


def test_largest_fitting_good_hint_is_cheap_and_nothing_fits_raises():
    calls = []
    assert largest_fitting(lambda n: calls.append(n) or n <= 500, hint=500) == 500
    assert len(calls) == 3  # fits(0), fits(500), fits(501)
    with pytest.raises(ValueError):
        largest_fitting(lambda n: False)


def test_split_and_insert():
    units = split_sentences("One. Two!  Three?\nFour")
    assert units == ["One.", "Two!", "Three?", "Four"]
    assert haystack_with_needle(units, 6, "N.", 0) == "N. One. Two! Three? Four One. Two!"
    assert haystack_with_needle(units, 6, "N.", 100).endswith("Two! N.")
    assert haystack_with_needle(units, 4, "N.", 50) == "One. Two! N. Three? Four"


@pytest.mark.parametrize("counter", [CharCounter(), WhitespaceCounter()], ids=lambda c: c.name)
@pytest.mark.parametrize("depth", [0, 33, 100])
def test_fitted_prompt_is_maximal_within_budget(counter, depth):
    item = build_needle_item(
        random.Random(0),
        counter,
        FILLER,
        context_length=700,
        depth_percent=depth,
        needle="The magic number for {key} is {value}.",
    )
    assert item.context_tokens == counter.count_chat(user_turn(item.prompt), True) <= 700
    needle = f"The magic number for {item.key} is {item.value}."
    assert item.prompt.count(needle) == 1 and item.prompt.count(item.key) == 2
    bigger = item.prompt.replace(needle, f"{needle} {FILLER[0]}")
    assert counter.count_chat(user_turn(bigger), True) > 700
    body = item.prompt.split("\n\n")[1]
    if depth == 0:
        assert body.startswith(needle)
    if depth == 100:
        assert body.endswith(needle)


def test_grid_samples_and_scores():
    bench = NIAH(
        tokenizer="char", context_lengths=(400, 900), depth_percents=(0, 50, 100), num_samples=2
    )
    samples = list(bench.samples())
    assert len(samples) == 2 * 3 * 2 and len({s.id for s in samples}) == 12
    assert [s.messages for s in samples] == [s.messages for s in bench.samples()]
    for s in samples:
        assert s.meta["context_tokens"] <= s.meta["context_length"]
        assert s.meta["context_tokens"] > s.meta["context_length"] - 80
        assert bench.score(s, s.answers[0]) == {"best_subspan_em": 1.0, "exact_match": 1.0}
        assert bench.score(s, f"The number is {s.answers[0]}.")["exact_match"] == 0.0
        assert bench.score(s, f"The number is {s.answers[0]}.")["best_subspan_em"] == 1.0
        assert bench.score(s, "1234")["best_subspan_em"] == 0.0
        assert bench.score(s, f"\n {s.answers[0]}\n")["exact_match"] == 1.0
        echo = s.messages[0]["content"]  # copying the prompt does not find the needle
        assert bench.score(s, echo) == {"best_subspan_em": 0.0, "exact_match": 0.0}
    assert [
        s.answers
        for s in NIAH(
            tokenizer="char",
            context_lengths=(400, 900),
            depth_percents=(0, 50, 100),
            num_samples=2,
            seed=1,
        ).samples()
    ] != [s.answers for s in samples]


def test_haystack_file_and_errors(tmp_path):
    bench = NIAH(
        tokenizer="char", context_lengths=(1500,), depth_percents=(50,), haystack_path=str(HAYSTACK)
    )
    (sample,) = bench.samples()
    assert "The workshop stood at the end of a long lane." in sample.messages[0]["content"]
    with pytest.raises(DataError, match="file not found .expected a UTF-8 text file of haystack"):
        list(NIAH(tokenizer="char", haystack_path=str(tmp_path / "none.txt")).samples())
    with pytest.raises(ConfigError, match="tokenizer"):
        list(NIAH().samples())
    with pytest.raises(ConfigError, match="cannot hold even the question"):
        list(NIAH(tokenizer="char", context_lengths=(50,)).samples())
    with pytest.raises(ValueError, match="depth_percents"):
        NIAH(depth_percents=(120,))
    with pytest.raises(ValueError, match="needle"):
        NIAH(needle="no placeholders")


def test_sized_with_a_real_tokenizer():
    path = shared_file("tokenizers", "cl100k_base.tiktoken")
    from needlework.tokenization import load_counter

    counter = load_counter(f"tiktoken:cl100k_base@{path}")
    bench = NIAH(
        tokenizer=f"tiktoken:cl100k_base@{path}", context_lengths=(2000,), depth_percents=(0, 100)
    )
    for s in bench.samples():
        assert s.meta["context_tokens"] == counter.count_chat(list(s.messages), True) <= 2000
        assert s.meta["context_tokens"] > 1950
