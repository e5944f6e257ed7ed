"""Answer normalisation shared by MDQA's metric and the generators that keep answer-bearing
passages out of distractors (Lost in the Middle, Liu et al., 2023, arXiv:2307.03172,
``src/lost_in_the_middle/metrics.py``: SQuAD normalisation)."""

from __future__ import annotations

import string
from collections.abc import Iterable

try:  # the reference uses the third-party ``regex`` module; for this pattern ``re`` agrees
    import regex as _rx
except ImportError:  # pragma: no cover - regex is a dependency of transformers/tiktoken
    import re as _rx

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = _rx.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop ASCII punctuation, articles -> space, squeeze spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Does ``text`` contain any answer under :func:`normalize_answer` (the MDQA metric's view)?

    Used to keep answer-bearing passages out of MDQA distractors: a passage rejected here is
    exactly one that would let ``best_subspan_em`` credit a copied passage.
    """
    norm = normalize_answer(text)
    return any(normalize_answer(a) in norm for a in answers if normalize_answer(a))
