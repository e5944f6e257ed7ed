"""Pure scoring functions, ported rule for rule from the reference evaluations.

* ``normalize_answer`` / ``best_subspan_em``: Lost in the Middle (Liu et al., 2023,
  arXiv:2307.03172), ``src/lost_in_the_middle/metrics.py`` — SQuAD normalisation, then "some gold
  answer is a substring of the prediction". The MDQA first-line rule lives in :func:`first_line`
  and is applied by the caller, exactly where the reference applies it
  (``scripts/evaluate_qa_responses.py``).
* ``flenqa_*``: FLenQA (Levy et al., 2024, arXiv:2402.14848), ``FLenQA analysis.ipynb`` —
  including its quirks (punctuation is *not* removed, the last mention of true/false wins,
  substring tests, so ``untrue`` counts as true).
* ``kv_substring_match``: Lost in the Middle ``scripts/evaluate_kv_responses.py``.
* ``parse_kv_answer``: needlework's own parser for the synthetic dictionary task (rules below).

Everything here is a pure function of strings; golden tests are in tests/evaluation/test_metrics.py.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from needlework.sources.answers import normalize_answer

# FLenQA's notebook uses the stdlib ``re`` module.
_FLENQA_ARTICLES = re.compile(r"\b(a|an|the)\b")
# FLenQA removes this string only where it occurs verbatim, i.e. (practically) never. The
# reference builds it from ``set(string.punctuation)``, whose iteration order varies between
# processes; no order occurs in real text, so any fixed order reproduces the behaviour.
_FLENQA_PUNCT_BLOCK = "".join(sorted(set(string.punctuation)))

OTHER_REFUSED = "other/refused"


# --------------------------------------------------------------------------- Lost in the Middle


def first_line(text: str) -> str:
    """Everything before the first ``\\n``, stripped (MDQA: stops models copying the context)."""
    return text.split("\n")[0].strip()


def best_subspan_em(prediction: str, ground_truths: Iterable[str]) -> float:
    """1.0 if some normalised ground truth is a substring of the normalised prediction.

    No first-line truncation here (the reference does that in its evaluation script); MDQA
    scores ``best_subspan_em(first_line(output), answers)``. As in the reference, an answer that
    normalises to the empty string matches everything.
    """
    pred = normalize_answer(prediction).lower()
    for truth in ground_truths:
        if normalize_answer(truth).lower() in pred:
            return 1.0
    return 0.0


def exact_match(prediction: str, ground_truths: Iterable[str]) -> float:
    """1.0 if the normalised prediction equals some normalised ground truth."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(t) for t in ground_truths))


def kv_substring_match(value: str, output: str) -> float:
    """Lost-in-the-Middle KV accuracy: the gold value, lowercased, is a substring of the output."""
    return 1.0 if value.lower() in output.lower() else 0.0


# ----------------------------------------------------------------------------- hallucination
# Not in the paper, which argues from knowledge-benchmark drops (spec §4.5); these measure it on
# the outputs. Rules (golden tests in tests/evaluation/test_metrics.py):
#   abstained   the normalised answer is empty or starts with a refusal phrase below;
#   unsupported wrong, not an abstention, and not found in the documents: neither the whole
#               normalised answer (after an "answer is" lead-in) is a substring of the
#               normalised documents nor is every one of its content words one of their words;
#   wrong_answer (closed book) wrong and not an abstention.

ABSTENTION_PHRASES = (
    "i dont know",
    "i do not know",
    "dont know",
    "unknown",
    "no answer",
    "not sure",
    "im not sure",
    "i am not sure",
    "cannot answer",
    "cant answer",
    "i cannot",
    "i cant",
    "cannot be determined",
    "not mentioned",
    "not provided",
    "no information",
    "not enough information",
    "unanswerable",
    "none",
    "there is no information",
)
_STOPWORDS = frozenset(
    [
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "as",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "they",
        "his",
        "her",
        "their",
        "there",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "how",
        "answer",
    ]
)


def is_abstention(prediction: str) -> bool:
    """The answer declines (empty, "I don't know", "unknown", "not mentioned", ...)."""
    norm = normalize_answer(prediction)
    return not norm or any(norm == p or norm.startswith(p + " ") for p in ABSTENTION_PHRASES)


def _strip_lead_in(norm: str) -> str:
    for lead in ("answer is ", "answer "):
        if norm.startswith(lead):
            return norm[len(lead) :]
    return norm


def unsupported_answer(prediction: str, ground_truths: Sequence[str], context: str) -> float:
    """1.0 for a wrong, non-abstaining answer that the documents do not contain (see above)."""
    if best_subspan_em(prediction, ground_truths) or is_abstention(prediction):
        return 0.0
    pred = _strip_lead_in(normalize_answer(prediction))
    ctx = normalize_answer(context)
    if pred and pred in ctx:
        return 0.0
    words = [w for w in pred.split() if w not in _STOPWORDS]
    vocabulary = set(ctx.split())
    return 0.0 if words and all(w in vocabulary for w in words) else 1.0


def wrong_answer(prediction: str, ground_truths: Sequence[str]) -> float:
    """Closed book: 1.0 for an answer that is neither correct nor an abstention."""
    if best_subspan_em(prediction, ground_truths) or is_abstention(prediction):
        return 0.0
    return 1.0


# --------------------------------------------------------------------------------------- FLenQA


def flenqa_normalize(s: Any) -> str:
    """FLenQA's ``normalize_answer``: lowercase, (no-op) punctuation removal, articles, spaces."""
    s = str(s).lower()
    s = s.replace(_FLENQA_PUNCT_BLOCK, "")
    s = _FLENQA_ARTICLES.sub(" ", s)
    return " ".join(s.split())


def flenqa_category(answer: Any) -> str:
    """``'true'``, ``'false'`` or ``'other/refused'``: whichever word is mentioned *last*.

    ``not true`` is first rewritten to ``false``. Substring search, so ``untrue`` -> true and
    ``falsehood`` -> false. Booleans map directly; anything that is not a string is refused.
    """
    if isinstance(answer, bool) or (
        type(answer).__module__ == "numpy" and "bool" in type(answer).__name__
    ):
        return flenqa_normalize(str(answer))
    if not isinstance(answer, str):
        return OTHER_REFUSED
    text = flenqa_normalize(answer).replace("not true", "false")
    t, f = text.rfind("true"), text.rfind("false")
    if t > f:
        return "true"
    if f > t:
        return "false"
    return OTHER_REFUSED


def flenqa_correct(response: str, label: Any) -> bool:
    """Reference rule: ``category in label.lower()`` (a substring test; refused is never right)."""
    category = flenqa_category(flenqa_normalize(response))
    return category in str(label).lower()


def flenqa_cot_coverage(response: str, facts: Sequence[str]) -> int:
    """How many key facts occur verbatim (after normalisation) in the normalised response."""
    norm = flenqa_normalize(response)
    return sum(flenqa_normalize(fact) in norm for fact in facts)


def flenqa_early_response(response: str) -> bool:
    """The predicted category appears in the first 10 characters of the normalised response."""
    norm = flenqa_normalize(response)
    return flenqa_category(norm) in norm[:10].lower()


# ------------------------------------------------------------------ synthetic dictionary KV task

_INT = re.compile(r"\d+")
_DICT_BRACKETED = re.compile(r"dictionary\s*\[\s*([^\]\n]+?)\s*\]", re.IGNORECASE)
_DICT_NUMBERED = re.compile(r"dictionary\s*#?\s*(\d+)", re.IGNORECASE)
_VALUE_WORD = re.compile(r"\bvalue\b", re.IGNORECASE)


@dataclass(frozen=True)
class KVAnswer:
    """What :func:`parse_kv_answer` read from a model's answer (None = not found)."""

    value: str | None
    dict_name: str | None


def parse_kv_answer(output: str, key_numbers: Sequence[int] = ()) -> KVAnswer:
    """Read the value and the dictionary name from a free-form answer to the dictionary task.

    Rules, in order (case-insensitive):

    1. Dictionary: the name inside the first ``Dictionary [...]``; failing that, the number
       after the first ``Dictionary``/``dictionary #`` (``dictionary 32`` -> ``"32"``).
    2. Value: the integers after the first word ``value`` (the whole answer if there is no such
       word or no integer after it), minus those inside dictionary mentions, minus one
       occurrence of each number of the queried key (an echoed key is skipped, a value equal to
       a key number still counts); the first remaining integer is the value.

    The paper's template answer ``The value of key 365 is 7634 and it is in Dictionary [32].``
    parses to (7634, 32), as do ``7634 (Dictionary 32)`` and the multi-subkey answer
    ``The key ... is (141, 623, 616). Its value is 7634 and it is in Dictionary [32].``.
    Only the first value is taken, so listing many numbers earns nothing.
    """
    dict_match = _DICT_BRACKETED.search(output) or _DICT_NUMBERED.search(output)
    dict_name = dict_match.group(1) if dict_match else None
    masked = _DICT_NUMBERED.sub(_blank, _DICT_BRACKETED.sub(_blank, output))
    value_word = _VALUE_WORD.search(masked)
    value = _first_non_key_int(masked[value_word.end() :], key_numbers) if value_word else None
    if value is None:
        value = _first_non_key_int(masked, key_numbers)
    return KVAnswer(value=value, dict_name=dict_name)


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def _first_non_key_int(text: str, key_numbers: Sequence[int]) -> str | None:
    remaining = list(key_numbers)
    for match in _INT.finditer(text):
        number = int(match.group(0))
        if number in remaining:
            remaining.remove(number)
            continue
        return str(number)
    return None


def numbers_in_key(key: Any) -> list[int]:
    """The integers making up a key: ``365`` -> [365]; ``(141, 623, 616)`` -> [141, 623, 616]."""
    if isinstance(key, (list, tuple)):
        return [n for part in key for n in numbers_in_key(part)]
    return [int(m) for m in _INT.findall(str(key))]


def same_value(predicted: str | None, gold: Any) -> bool:
    """Integer-aware equality (``"0042"`` equals ``42``); other strings compared stripped."""
    if predicted is None:
        return False
    gold_s = str(gold).strip()
    try:
        return int(predicted) == int(gold_s)
    except ValueError:
        return predicted.strip() == gold_s


def depth_bin(depth: float, num_bins: int) -> float:
    """Lower edge of the equal-width bin holding ``depth`` in [0, 1] (1.0 joins the last bin)."""
    index = min(int(depth * num_bins), num_bins - 1)
    return round(index / num_bins, 6)


_DIGITS = re.compile(r"\d+")


def format_match(output: str, reference: str) -> float:
    """1.0 if the first line of ``output`` has the reference answer's shape, numbers aside.

    Every run of digits becomes ``#`` on both sides, so ``The value of key 12 is 345 and it is
    in Dictionary [6].`` matches the paper's answer template whatever the numbers. It measures
    whether a model learned the answer *format* (the cheap part of the synthetic task), apart
    from whether it retrieved the right value.
    """
    masked = _DIGITS.sub("#", first_line(output).strip())
    return float(masked == _DIGITS.sub("#", reference.strip()))
