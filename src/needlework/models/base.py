"""The inference-backend contract shared by every stage that needs a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from needlework.records import Message


class ChatModel(Protocol):
    """A chat model: conversations in, greedy completions out, order preserved.

    Backends are registered dataclasses (``@backends.register("hf")``) whose fields are their
    config; heavy imports happen on first use, never at module import.
    """

    def generate(self, conversations: Sequence[Sequence[Message]], *,
                 max_new_tokens: int) -> list[str]:
        """Greedy completion of each conversation (the model's chat template applied)."""
        ...

    def describe(self) -> str:
        """A short id for run folders and reports, e.g. ``hf:mistral-7b-instruct-v0.1``."""
        ...
