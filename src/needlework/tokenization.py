"""Token counting with real tokenizers, offline, behind one small interface.

``load_counter(spec)`` accepts (full list in :func:`load_counter`):

* ``char`` / ``whitespace`` — trivial counters for unit tests;
* ``hf:<folder or hub id>`` — a Hugging Face tokenizer through ``AutoTokenizer``;
* ``tiktoken:<encoding>`` or ``tiktoken:<encoding>@<path/to/file.tiktoken>`` — e.g. cl100k_base;
* ``mistral:<version>`` — Mistral's SentencePiece models shipped by ``mistral-common`` (v1 = the
  paper's Mistral-7B-Instruct-v0.1 tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from needlework.records import Message


@runtime_checkable
class TokenCounter(Protocol):
    """What generators, budgets and backends need from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model sees it inside a prompt (no BOS/EOS added)."""
        ...

    def count(self, text: str) -> int:
        """``len(encode(text))``, possibly faster."""
        ...

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        """Tokens of the conversation with the model's chat template applied (what it sees)."""
        ...


class CharCounter:
    """One token per character: predictable budgets in unit tests."""

    name = "char"

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def count(self, text: str) -> int:
        return len(text)

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        return sum(len(m["content"]) + 4 for m in messages) + (2 if add_generation_prompt else 0)


class WhitespaceCounter:
    """One token per whitespace-separated word."""

    name = "whitespace"

    def encode(self, text: str) -> list[int]:
        return [hash(w) & 0xFFFF for w in text.split()]

    def count(self, text: str) -> int:
        return len(text.split())

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        return sum(len(m["content"].split()) + 2 for m in messages)
