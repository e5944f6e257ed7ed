"""Deterministic fake model for tests and dry runs (in the spirit of lm-eval's ``dummy`` model).

Run:  needlework eval --model scripted:gold --benchmark kv_retrieval --limit 5

Modes: ``gold`` answers each sample's first accepted answer (so every benchmark's primary metric
should read 1.0: an end-to-end check of prompts, scorers and aggregation), ``constant`` answers
``text``, ``echo`` repeats the last message, ``last_line`` its last non-empty line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from needlework.errors import UserError
from needlework.models.base import Backend, validate_conversations
from needlework.records import Message
from needlework.registry import backends


@backends.register("scripted")
@dataclass(frozen=True)
class Scripted(Backend):
    """Deterministic answers (gold / constant / echo / last_line) for tests and dry runs."""

    speed_fields: ClassVar[frozenset[str]] = frozenset()

    mode: Literal["gold", "constant", "echo", "last_line"] = "gold"
    """What to answer; ``gold`` needs the runner (it passes each sample's answers)."""
    text: str = ""
    """The answer in ``constant`` mode."""
    _calls: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def uses_answers(self) -> bool:  # type: ignore[override]  # per instance: by mode
        """Only ``gold`` reads the answers; the runner passes them when this is true."""
        return self.mode == "gold"

    short_form: ClassVar[str] = "MODE"
    """``scripted:gold`` and the other modes."""

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
        answers: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        validate_conversations(conversations)
        if self.mode == "gold" and (answers is None or len(answers) != len(conversations)):
            raise UserError(
                "scripted: mode 'gold' needs each sample's answers; use it "
                "through the evaluation runner (or pass answers=)"
            )
        self._calls.append(len(conversations))
        if self.mode == "gold":
            return [a[0] if a else "" for a in answers or []]
        if self.mode == "constant":
            return [self.text for _ in conversations]
        last = [conv[-1]["content"] for conv in conversations]
        if self.mode == "echo":
            return last
        return [next((ln for ln in reversed(t.splitlines()) if ln.strip()), "") for t in last]
