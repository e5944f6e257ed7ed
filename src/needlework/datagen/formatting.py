"""Row formats written by ``needlework generate`` (docs/formats.md §A) and the OpenAI file checks.

* canonical: ``{"id", "messages": [user, assistant], "meta": {...}}`` — no system turn, as the
  official generator wrote its Mistral files;
* OpenAI fine-tuning: ``{"messages": [system, user, assistant]}`` with the system message of the
  official ``get_openai_entry``; nothing else on the line (the API rejects unknown keys);
* TRL: ``{"prompt": [user], "completion": [assistant]}`` (conversational prompt/completion,
  which SFTTrainer trains on the completion only by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from needlework.errors import DataError
from needlework.tokenization import TokenCounter

SYSTEM_MESSAGE = "Write a response that appropriately completes the request."
# gpt-3.5-turbo-1106, the paper's model: fine-tuning examples may hold at most this many tokens.
OPENAI_EXAMPLE_LIMIT = 16385
_MESSAGE_KEYS = {"role", "content", "name", "weight"}


def canonical_row(
    sample_id: str, messages: list[dict[str, str]], meta: dict[str, Any]
) -> dict[str, Any]:
    return {"id": sample_id, "messages": messages, "meta": meta}


def openai_row(row: dict[str, Any], system_message: str = SYSTEM_MESSAGE) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system_message}, *row["messages"]]}


def trl_row(row: dict[str, Any]) -> dict[str, Any]:
    msgs = row["messages"]
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def validate_openai_row(row: Any, where: str) -> None:
    """The checks OpenAI runs on a chat fine-tuning line (the shared turn rules, then its own:
    nothing but ``messages`` on the line, known message keys, no empty content); raises
    DataError naming ``where``."""
    from needlework.records import validate_messages

    if not isinstance(row, dict) or set(row) != {"messages"}:
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{where}: expected exactly one key 'messages', got {keys}")
    validate_messages(row["messages"], where)
    for i, m in enumerate(row["messages"]):
        if set(m) - _MESSAGE_KEYS:
            extra = sorted(set(m) - _MESSAGE_KEYS)
            raise DataError(f"{where}: message {i} has unknown keys {extra}")
        if not m["content"]:
            raise DataError(f"{where}: message {i} content must be a non-empty string")


def openai_report(
    rows: Iterable[dict[str, Any]], counter: TokenCounter, where: str
) -> dict[str, Any]:
    """Validate OpenAI rows and report per-example token counts (counter's chat convention)."""
    counts = []
    for i, row in enumerate(rows, 1):
        validate_openai_row(row, f"{where}:{i}")
        counts.append(counter.count_chat(row["messages"]))
    if not counts:
        return {"n": 0, "tokenizer": counter.name}
    return {
        "n": len(counts),
        "tokenizer": counter.name,
        "tokens": stats(counts),
        "total_tokens": sum(counts),
        "example_limit": OPENAI_EXAMPLE_LIMIT,
        "over_limit": sum(1 for c in counts if c > OPENAI_EXAMPLE_LIMIT),
    }


def stats(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}
