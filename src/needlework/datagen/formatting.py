"""Row formats written by ``needlework generate`` (docs/formats.md §A) and the OpenAI token report.

* canonical: ``{"id", "messages": [user, assistant], "meta": {...}}`` — no system turn, as the
  official generator wrote its Mistral files;
* OpenAI fine-tuning: ``{"messages": [system, user, assistant]}`` with the system message of the
  official ``get_openai_entry``; nothing else on the line (the API rejects unknown keys), no
  empty message (the config refuses an empty ``system_message``);
* TRL: ``{"prompt": [user], "completion": [assistant]}`` (conversational prompt/completion,
  which SFTTrainer trains on the completion only by default).
"""

from __future__ import annotations

from typing import Any

SYSTEM_MESSAGE = "Write a response that appropriately completes the request."
# gpt-3.5-turbo-1106, the paper's model: fine-tuning examples may hold at most this many tokens.
OPENAI_EXAMPLE_LIMIT = 16385


def openai_row(row: dict[str, Any], system_message: str = SYSTEM_MESSAGE) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system_message}, *row["messages"]]}


def trl_row(row: dict[str, Any]) -> dict[str, Any]:
    msgs = row["messages"]
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def openai_report(counts: list[int], tokenizer: str) -> dict[str, Any]:
    """The token counts of a split's OpenAI examples (the counter's chat convention)."""
    if not counts:
        return {"n": 0, "tokenizer": tokenizer}
    return {
        "n": len(counts),
        "tokenizer": tokenizer,
        "tokens": stats(counts),
        "total_tokens": sum(counts),
        "example_limit": OPENAI_EXAMPLE_LIMIT,
        "over_limit": sum(1 for c in counts if c > OPENAI_EXAMPLE_LIMIT),
    }


def stats(values: list[int], digits: int = 2) -> dict[str, float]:
    """min, mean (rounded to ``digits``) and max."""
    mean = round(sum(values) / len(values), digits)
    return {"min": min(values), "mean": mean, "max": max(values)}
