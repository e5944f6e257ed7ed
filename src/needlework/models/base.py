"""The inference-backend contract shared by every stage that needs a model.

Required: ``generate`` and ``describe``. Optional members the runner looks for (duck-typed, so a
backend only grows what it needs):

* ``generate_iter(conversations, *, max_new_tokens)`` yields ``(index, text)`` as results finish
  (any order). The runner then saves each finished batch/request at once instead of waiting for a
  whole call, so a crash loses nothing that was finished (``hf``, ``vllm``, ``openai``).
* ``uses_answers`` (bool): when true the runner passes ``answers=`` (each sample's accepted answers,
  aligned with ``conversations``) to ``generate``. Only the ``scripted`` backend's ``gold`` mode
  sets it; real models never see answers.
* ``usage()`` returns cumulative counters (``requests``, ``prompt_tokens``, ``completion_tokens``,
  ``retries``...) that the runner records in ``run.json``.

A prompt that does not fit the model's context is never truncated: the backend raises
:class:`PromptTooLongError` before generating anything for the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from needlework.errors import UserError
from needlework.records import Message


class ChatModel(Protocol):
    """A chat model: conversations in, greedy completions out, order preserved.

    Backends are registered dataclasses (``@backends.register("hf")``) whose fields are their
    config; heavy imports happen on first use, never at module import. ``speed_fields`` names
    the fields that never change an answer (batch size, retries, the endpoint, ...): a run may
    resume with them changed, and reports treat models differing only there as one model.
    """

    speed_fields: ClassVar[frozenset[str]]

    def generate(
        self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> list[str]:
        """Greedy completion of each conversation (the model's chat template applied)."""
        ...

    def describe(self) -> str:
        """A short id for run folders and reports, e.g. ``hf:mistral-7b-instruct-v0.1``."""
        ...

    def token_counter(self) -> str | None:
        """This model's own tokenizer as a ``load_counter`` spec (``hf:<path>``), handed to
        benchmarks sized in the model's tokens; None when it is not known here (an API)."""
        ...


class PromptTooLongError(UserError):
    """One or more prompts (plus the tokens to generate) exceed the model's context.

    ``items`` holds ``(index, prompt_tokens)`` with indices into the conversations of the call;
    ``prompt_tokens`` is ``None`` when only the server knows (an API's context-length error).
    The runner maps indices to sample ids and either aborts or records the samples as skipped.
    """

    def __init__(
        self,
        items: Sequence[tuple[int, int | None]],
        *,
        limit: int | None,
        max_new_tokens: int,
        model: str,
        detail: str = "",
    ):
        self.items = [(int(i), n) for i, n in items]
        self.limit = limit
        self.max_new_tokens = max_new_tokens
        self.model = model
        self.detail = detail
        super().__init__(
            self.describe_item(0)
            + (f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else "")
        )

    def describe_item(self, k: int, name: str | None = None) -> str:
        """One line for the k-th offending prompt, naming it ``name`` (default: its index)."""
        index, tokens = self.items[k]
        who = name if name is not None else f"prompt #{index}"
        if tokens is None:
            return f"{who} does not fit the context of {self.model}: {self.detail}"
        return (
            f"{who} has {tokens} tokens + {self.max_new_tokens} new tokens, over the "
            f"{self.limit}-token context of {self.model} (prompts are never truncated)"
        )

    def shifted(self, offset: int) -> PromptTooLongError:
        """The same error with indices moved by ``offset`` (a chunk inside a larger call)."""
        return PromptTooLongError(
            [(i + offset, n) for i, n in self.items],
            limit=self.limit,
            max_new_tokens=self.max_new_tokens,
            model=self.model,
            detail=self.detail,
        )


def check_prompt_lengths(
    lengths: Sequence[int], *, limit: int | None, max_new_tokens: int, model: str
) -> None:
    """Raise :class:`PromptTooLongError` listing every prompt with ``len + new > limit``."""
    if limit is None:
        return
    bad = [(i, n) for i, n in enumerate(lengths) if n + max_new_tokens > limit]
    if bad:
        raise PromptTooLongError(bad, limit=limit, max_new_tokens=max_new_tokens, model=model)


def validate_conversations(conversations: Sequence[Sequence[Message]]) -> None:
    """Reject malformed chat input early with a one-line error (not a library traceback)."""
    for i, conv in enumerate(conversations):
        if isinstance(conv, (str, bytes)) or not isinstance(conv, Sequence) or not conv:
            raise UserError(
                f"conversation #{i}: expected a non-empty list of "
                f"{{'role', 'content'}} messages, got {type(conv).__name__}"
            )
        for j, msg in enumerate(conv):
            if (
                not isinstance(msg, dict)
                or not isinstance(msg.get("role"), str)
                or not isinstance(msg.get("content"), str)
            ):
                raise UserError(
                    f"conversation #{i} message #{j}: expected {{'role': str, "
                    f"'content': str}}, got {msg!r:.80}"
                )


def answer_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A model config without the fields its backend declares speed-only (``speed_fields``):
    what makes two runs' models the same model. Unknown backends keep every field."""
    from needlework.registry import backends

    name = spec.get("name")
    unit = dict(backends.items()).get(name) if isinstance(name, str) else None
    free: frozenset[str] = getattr(unit, "speed_fields", frozenset())
    return {k: v for k, v in spec.items() if k not in free}


def warn_remote_code(path: str) -> None:
    """``trust_remote_code`` runs Python shipped with a checkpoint: never silently."""
    import sys

    print(
        f"needlework: warning: trust_remote_code is on: Python code from '{path}' will run on "
        "this machine with your permissions (only for checkpoints you trust)",
        file=sys.stderr,
    )


class _Streams(Protocol):
    def generate_iter(
        self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> Iterable[tuple[int, str]]: ...


class Streaming:
    """Mixin for backends whose answers arrive one by one (their ``generate_iter`` yields
    ``(index, text)`` in any order): ``generate`` collects them in order."""

    def generate(
        self: _Streams, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> list[str]:
        outs = [""] * len(conversations)
        for i, text in self.generate_iter(conversations, max_new_tokens=max_new_tokens):
            outs[i] = text
        return outs


class Weights:
    """Mixin for backends that run weights named by their ``path`` field (``hf``, ``vllm``):
    the ``name:PATH`` short form, and the weights' own tokenizer as the token counter."""

    short_form: ClassVar[str] = "PATH"
    path: str

    @classmethod
    def from_short(cls, value: str) -> dict[str, Any]:
        return {"path": value}

    def token_counter(self) -> str | None:
        return "hf:" + self.path


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def folder_sha256(folder: Path) -> str | None:
    """One sha256 over a model folder's weight files (names and bytes, sorted), cached by path,
    size and mtime under ``$NEEDLEWORK_CACHE`` so a 15 GB checkpoint is hashed once. None when
    the folder holds no weight file."""
    import hashlib

    from needlework.io import sha256_file, write_json
    from needlework.runtime import cache_table

    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    index, known = cache_table("weight_hashes.json")
    total = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in known:
            known[key] = sha256_file(f)
            changed = True
        total.update(f"{f.relative_to(folder).as_posix()}\0{known[key]}\n".encode())
    if changed:
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            write_json(index, known)
        except OSError:
            pass  # a read-only cache only costs the next run a rehash
    return total.hexdigest()


def is_local_path(spec: str) -> bool:
    """A path, not a hub id: it exists, or it is written like a path (``/``, ``.``, ``~``).

    A ``.gguf`` file or bundled GGUF alias is local too (nothing is looked up on the hub).
    """
    from needlework.models.gguf import is_gguf_spec

    return (
        Path(spec).expanduser().exists()
        or spec.startswith(("/", ".", "~"))
        or spec.count("/") > 1
        or is_gguf_spec(spec)
    )
