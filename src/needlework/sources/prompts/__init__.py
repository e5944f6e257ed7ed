"""Benchmark prompt templates, one ``<name>.txt`` per prompt, loaded by name.

Files hold the exact bytes of the reference prompts (trailing newline included). Whether that
newline is part of the prompt is the caller's decision, as in the references: Lost in the Middle
strips it (``.rstrip("\\n")``), FLenQA keeps it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent


@functools.cache
def load_prompt(name: str) -> str:
    """The raw text of ``prompts/<name>.txt`` (UTF-8, nothing stripped)."""
    return (PROMPTS_DIR / f"{name}.txt").read_bytes().decode("utf-8")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` placeholders in one pass, so inserted text is never re-scanned.

    Used where field names are not identifiers (FLenQA's ``{assertion/question}``) or inserted
    text may itself contain braces; unknown placeholders are an error, not left in the prompt.
    """
    pattern = re.compile(r"\{(" + "|".join(re.escape(k) for k in values) + r")\}")
    out = pattern.sub(lambda m: values[m.group(1)], template)
    leftover = re.findall(r"\{([^{}\s]+)\}", pattern.sub("", template))
    if leftover:
        raise ValueError(f"prompt: no value for placeholder(s) {', '.join(leftover)}")
    return out
