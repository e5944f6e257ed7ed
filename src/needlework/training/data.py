"""Training rows: read chat JSONL, validate every row (errors name ``file:line``), mix datasets.

Every backend trains on the same validated rows, so a malformed row stops ``needlework train``
before a model is loaded or a file is uploaded. Accepted row shapes:

* ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}], ...}`` (docs/formats.md §A);
* ``{"prompt": [messages...], "completion": [{"role": "assistant", ...}]}`` (TRL conversational).

A conversation is an optional leading system message, then user/assistant turns alternating,
starting with user and ending with a non-empty assistant turn: the shape every chat template we
target (Mistral ``[INST]`` raises otherwise) and the OpenAI finetuning API accept. Only ``role``
and ``content`` are kept from each message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass

from needlework.config import validate
from needlework.errors import DataError
from needlework.io import iter_jsonl
from needlework.records import Conversation, Message

__all__ = ["ChatRow", "Conversation", "chat_row", "mix_rows", "read_chat_rows"]


@dataclass(frozen=True)
class ChatRow:
    """One validated conversation and where it came from (for error messages)."""

    messages: Conversation
    source: str
    """``path:line`` of the row in its JSONL file."""

    @property
    def prompt(self) -> list[Message]:
        """Every turn before the final assistant answer."""
        return list(self.messages[:-1])

    @property
    def completion(self) -> list[Message]:
        """The final assistant turn (the answer trained on)."""
        return [self.messages[-1]]


def chat_row(row: dict[str, Any], where: str) -> ChatRow:
    """A ``messages`` row (or a conversational prompt/completion row) as a :class:`ChatRow`;
    else one line naming ``where`` and the field."""
    pair = [row.get("prompt"), row.get("completion")]
    if "messages" not in row and all(isinstance(part, list) for part in pair):
        row = {"messages": pair[0] + pair[1]}  # type: ignore[operator]
    fields = {k: v for k, v in row.items() if k == "messages"}
    return validate(ChatRow, {**fields, "source": where}, source=where)


def read_chat_rows(path: str | Path, limit: int | None = None) -> list[ChatRow]:
    """Every row of a chat JSONL file, validated; stops at the first bad row."""
    p = Path(path)
    rows: list[ChatRow] = []
    for lineno, row in iter_jsonl(p, expected="chat JSONL rows with 'messages'"):
        rows.append(chat_row(row, f"{p}:{lineno}"))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{p}: no rows (expected chat JSONL rows with 'messages')")
    return rows


def mix_rows(
    primary: list[ChatRow], other: list[ChatRow], ratio: float, seed: int
) -> tuple[list[ChatRow], dict[str, int]]:
    """``primary`` plus rows of ``other`` so that they make up ``ratio`` (in (0, 1), checked by
    the config) of the result.

    Deterministic for a seed. ``other`` rows are drawn without replacement while it is large
    enough, else every row is repeated whole passes plus a random remainder (counted in
    ``mix_passes``); the result is shuffled so batches see both sources.
    """
    rng = random.Random(seed)
    wanted = round(len(primary) * ratio / (1.0 - ratio))
    passes, rest = divmod(wanted, len(other))
    picked: list[ChatRow] = []
    for _ in range(passes):
        picked.extend(rng.sample(other, len(other)))
    picked.extend(rng.sample(other, rest))
    mixed = primary + picked
    rng.shuffle(mixed)
    return mixed, {
        "primary_rows": len(primary),
        "mix_rows": len(picked),
        "mix_source_rows": len(other),
        "mix_passes": passes,
    }


def read_dataset_rows(spec: Any) -> list[ChatRow]:
    """Rows of a ``MixDataset`` (hub id or local folder) through ``datasets.load_dataset``,
    validated like JSONL rows; errors name the dataset, split and row index."""
    import datasets

    split = spec.split if spec.limit is None else f"{spec.split}[:{spec.limit}]"
    pin = {"revision": spec.revision} if spec.revision else {}
    try:
        table = datasets.load_dataset(spec.path, split=split, **pin)
    except Exception as exc:  # offline, unknown id or split, unreadable files: one line
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise DataError(
            f"mix_dataset.path: cannot load '{spec.path}' split '{spec.split}' "
            f"({type(exc).__name__}: {detail})"
        ) from None
    rows = [chat_row(dict(row), f"{spec.path}[{spec.split}]:{i}") for i, row in enumerate(table)]
    if not rows:
        raise DataError(f"mix_dataset: '{spec.path}' split '{spec.split}' has no rows")
    return rows


def load_training_rows(cfg: Any) -> tuple[list[ChatRow], dict[str, Any]]:
    """Rows for ``cfg`` (a TrainConfig): train_path, limited and mixed as configured."""
    rows = read_chat_rows(cfg.train_path, cfg.limit)
    stats: dict[str, Any] = {"train_path": str(cfg.train_path), "primary_rows": len(rows)}
    read: Any = None  # the mix source's reader, run only when something is mixed in
    if cfg.mix_dataset is not None:
        d = cfg.mix_dataset
        source = {"mix_dataset": d.path, "mix_split": d.split, "mix_revision": d.revision,
                  "mix_limit": d.limit}  # fmt: skip
        read = functools.partial(read_dataset_rows, d)
    elif cfg.mix_path is not None:
        source = {"mix_path": str(cfg.mix_path)}
        read = functools.partial(read_chat_rows, cfg.mix_path)
    if read is not None and cfg.mix_ratio > 0:
        other = read()
        rows, mix = mix_rows(rows, other, cfg.mix_ratio, cfg.seed)
        digest = hashlib.sha256(json.dumps([r.messages for r in other]).encode()).hexdigest()
        stats.update(mix, **source, mix_source_sha256=digest, mix_ratio=cfg.mix_ratio)
    elif read is not None:
        stats.update(mix_rows=0, **source, mix_ratio=0.0)
    stats["rows"] = len(rows)
    return rows, stats
