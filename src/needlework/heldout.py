"""Held-out questions: the real benchmark questions a finetuning dataset used, recorded in its
``manifest.json`` so that evaluation never asks them.

The baseline generators (``multidoc_qa``, ``in2_style``) train on NQ-Open questions, the same
questions MDQA and NQ-Open evaluate on. ``needlework generate`` lists every question it used
(train and eval splits, every seed) under ``held_out``; a benchmark given that dataset (its
``held_out`` field) drops them before choosing its samples, so a paired comparison of several
finetuned models and the base model asks all of them the same unseen questions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from needlework.errors import DataError
from needlework.io import read_json
from needlework.records import HeldOut, Manifest

NORMALISATION = "lowercase, whitespace collapsed, trailing '?' and spaces dropped"


def question_key(question: str) -> str:
    """The form questions are compared in (NQ-Open files and lm-eval prompts differ only so)."""
    return re.sub(r"\s+", " ", question).strip().rstrip("?").strip().lower()


def held_out_entry(questions: Iterable[str]) -> dict[str, Any]:
    """The manifest's ``held_out`` section: the questions, sorted, in their original form."""
    items = sorted(set(questions))
    return HeldOut(normalisation=NORMALISATION, count=len(items), questions=items).model_dump()


def load_held_out(paths: Sequence[str | Path]) -> frozenset[str]:
    """Normalised questions recorded by the datasets at ``paths`` (folders or manifest files).

    A dataset without a ``held_out`` section (synthetic data) contributes nothing; a path that
    is not a generated dataset is an error, since a typo would silently hold out nothing.
    """
    keys: set[str] = set()
    for raw in paths:
        path = Path(raw)
        manifest = path / "manifest.json" if path.is_dir() else path
        if not manifest.is_file():
            raise DataError(
                f"held_out: {raw}: no manifest.json (expected a dataset folder written by "
                "needlework generate, or its manifest.json)"
            )
        held = read_json(manifest, Manifest).held_out
        keys.update(question_key(q) for q in (held.questions if held else ()))
    return frozenset(keys)
