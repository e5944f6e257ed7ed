"""Deterministic fake model for tests and dry runs (in the spirit of lm-eval's ``dummy`` model).

Run:  needlework eval --model scripted:last_line --benchmark kv_retrieval --limit 5

Modes: ``constant`` answers ``text``, ``echo`` repeats the last message, ``last_line`` its last
non-empty line. A scripted model never sees the answers: the oracle run, where every primary
metric should read 1.0, is the runner's ``gold_answers`` option (``eval --gold-answers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any, ClassVar, Literal

from needlework.config import config
from needlework.models.base import Backend, validate_conversations
from needlework.records import Message
from needlework.registry import backends


@backends.register("scripted")
@config
class Scripted(Backend):
    """Deterministic answers (constant / echo / last_line) for tests and dry runs."""

    speed_fields: ClassVar[frozenset[str]] = frozenset()

    mode: Literal["constant", "echo", "last_line"] = "echo"
    """What to answer: ``text``, the last message, or its last non-empty line."""
    text: str = ""
    """The answer in ``constant`` mode."""
    _calls: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    short_form: ClassVar[str] = "MODE"
    """``scripted:echo``, ``scripted:constant``, ``scripted:last_line``."""

    @classmethod
    def from_short(cls, value: str) -> dict[str, Any]:
        return {"mode": value}

    def describe(self) -> str:
        return f"scripted:{self.mode}"

    def token_counter(self) -> str | None:
        return None  # no model: benchmarks sized in tokens need their own tokenizer

    def usage(self) -> dict[str, int]:
        return {"requests": sum(self._calls)}

    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int,
    ) -> list[str]:
        validate_conversations(conversations)
        self._calls.append(len(conversations))
        if self.mode == "constant":
            return [self.text for _ in conversations]
        last = [conv[-1]["content"] for conv in conversations]
        if self.mode == "echo":
            return last
        return [next((ln for ln in reversed(t.splitlines()) if ln.strip()), "") for t in last]
