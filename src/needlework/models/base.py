"""The inference-backend contract shared by every stage that needs a model.

Every backend subclasses :class:`Backend` and defines ``generate``, ``describe``,
``speed_fields`` and ``token_counter``; :class:`Backend` gives the other members of the contract
defaults that a backend overrides where it can do better, so no stage probes a backend for what
it has:

* ``generate_iter(conversations, *, max_new_tokens)`` yields ``(index, text)`` as results finish
  (any order); the runner saves each at once, so a crash loses nothing that was finished. Default:
  ``generate`` over chunks of 64 conversations (``hf``, ``vllm``, ``openai`` stream finer).
* ``usage()``: cumulative counters (``requests``, ``prompt_tokens``, ``completion_tokens``,
  ``retries``...) recorded in ``run.json``; ``provenance()``: what exactly was loaded (hub commit,
  weight hashes) or None; ``count_tokens(text)``: the model's token count of a text (default: its
  characters, never fewer than tokens); ``lm_eval_model(batch_size)``: lm-eval's own model over
  the same weights or None (lm-eval then runs over ``generate``), declared by the class
  attribute ``log_likelihoods`` so a suite can plan before any model is built.

A prompt that does not fit the model's context is never truncated: the backend raises
:class:`PromptTooLongError` before generating anything for the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from needlework.config import validate
from needlework.errors import UserError, first_line
from needlework.records import Message, Turns


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

    log_likelihoods: ClassVar[bool]

    def generate_iter(
        self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> Iterable[tuple[int, str]]:
        """``(index, text)`` as results finish, in any order."""
        ...

    def usage(self) -> dict[str, int]: ...

    def provenance(self) -> dict[str, Any] | None: ...

    def count_tokens(self, text: str) -> int: ...

    def lm_eval_model(self, batch_size: int | None) -> Any: ...


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
        validate(Turns, conv, source=f"conversation #{i}", prefix="messages")


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


def need(module: str, what: str, install: str) -> Any:
    """``import module``, or one line saying ``what`` needs it and how to ``install`` it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what}: the {module} package is not installed ({install})") from None


def load_failure(exc: Exception, what: str, flag: str) -> UserError:
    """One line for a failed ``from_pretrained``: a checkpoint that ships its own model code
    (loading always passes ``trust_remote_code`` explicitly, so transformers never asks on
    stdin) is named as such with the ``flag`` that allows it."""
    if "trust_remote_code" in str(exc):
        return UserError(
            f"{what}: the checkpoint ships its own model code (auto_map in its config); set "
            f"{flag}: true to run it (only for checkpoints you trust)"
        )
    return UserError(f"{what}: {first_line(exc)}")


class Backend:
    """Defaults for the contract's members a backend may not need (module docstring). It
    defines neither ``generate`` nor ``describe``: registration still fails without them."""

    log_likelihoods: ClassVar[bool] = False
    """True where ``lm_eval_model`` returns lm-eval's own model (log-probabilities work)."""
    CHUNK: ClassVar[int] = 64
    """Conversations per ``generate`` call of the default ``generate_iter``."""

    def generate_iter(
        self: Any, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> Iterator[tuple[int, str]]:
        """``generate`` over chunks of :attr:`CHUNK` conversations, yielding each when done
        (a backend returning another number of answers than it was asked fails here)."""
        for start in range(0, len(conversations), self.CHUNK):
            part = list(conversations[start : start + self.CHUNK])
            try:
                outs = self.generate(part, max_new_tokens=max_new_tokens)
            except PromptTooLongError as exc:
                raise exc.shifted(start) from None
            yield from zip(range(start, start + len(part)), outs, strict=True)

    def usage(self) -> dict[str, int]:
        return {}

    def provenance(self) -> dict[str, Any] | None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text)

    def lm_eval_model(self, batch_size: int | None) -> Any:
        return None


class Streaming(Backend):
    """Base for backends whose answers arrive one by one (their ``generate_iter`` yields
    ``(index, text)`` in any order): ``generate`` collects them in order."""

    def generate(
        self: Any, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> list[str]:
        outs = [""] * len(conversations)
        for i, text in self.generate_iter(conversations, max_new_tokens=max_new_tokens):
            outs[i] = text
        return outs


class Weights(Backend):
    """Base for backends that run weights named by their ``path`` field (``hf``, ``vllm``):
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

    from needlework.io import sha256_file
    from needlework.runtime import cache_table, save_cache_table

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
        save_cache_table(index, known)
    return total.hexdigest()
