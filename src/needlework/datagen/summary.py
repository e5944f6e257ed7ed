"""``needlework inspect DATA``: what is in a generated dataset file or folder, at a glance.

Run:  needlework inspect data/simple_dict_kv_mistral_v1_wtemplate

Accepts a canonical JSONL file (``seed0/train.jsonl``), any chat JSONL with a ``messages`` list
(OpenAI lines, for example), or a folder (every ``seed*/{train,eval}.jsonl`` under it, else every
``*.jsonl``). Token lengths come from the rows' ``meta``; rows without it are measured in
characters and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from needlework.config import Fraction, NonNegativeInt, validate
from needlework.datagen.formatting import stats
from needlework.errors import DataError
from needlework.io import iter_jsonl

BINS = 10


class _Meta(TypedDict, total=False):
    """What the summary reads of a row's ``meta`` (other keys are shown, not read)."""

    prompt_tokens: NonNegativeInt
    conversation_tokens: NonNegativeInt
    gold_depth: Fraction
    gold_position: NonNegativeInt


def _files(path: Path) -> list[Path]:
    if path.is_file() and path.name == "manifest.json":
        raise DataError(
            f"{path}: a dataset's manifest, not its rows; give its folder ({path.parent})"
        )
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder (expected a dataset JSONL or folder)")
    files = sorted(path.glob("seed*/train.jsonl")) + sorted(path.glob("seed*/eval.jsonl"))
    files = files or sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    if not files:
        raise DataError(f"{path}: no .jsonl files found")
    return files


def _messages(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    from needlework.records import validate_messages

    if "scores" in row and "output" in row:
        raise DataError(
            f"{where}: a prediction of an eval run, not a training or eval sample "
            "(needlework report reads run folders)"
        )
    if "messages" in row:
        msgs = row["messages"]
    elif isinstance(row.get("prompt"), list) and isinstance(row.get("completion"), list):
        msgs = [*row["prompt"], *row["completion"]]
    else:
        raise DataError(f"{where}: expected a 'messages' list (or TRL prompt/completion lists)")
    return list(validate_messages(msgs, where))


def inspect_data(path: str | Path) -> dict[str, Any]:
    """Summary of every row under ``path``: counts, lengths, gold-position histogram, example."""
    files = _files(Path(path))
    lengths: list[int] = []
    conv: list[int] = []
    depths: list[float] = []
    positions_0 = 0
    unit = "tokens"
    n = 0
    example: dict[str, Any] | None = None
    by_file: dict[str, int] = {}
    for f in files:
        count = 0
        for lineno, row in iter_jsonl(f):
            msgs = _messages(row, f"{f}:{lineno}")
            meta = row.get("meta") or {}
            read: _Meta = validate(_Meta, meta, source=f"{f}:{lineno}", prefix="meta")
            if "prompt_tokens" in read:
                lengths.append(read["prompt_tokens"])
                conv.append(read.get("conversation_tokens", read["prompt_tokens"]))
            else:
                unit = "characters"
                user = [m["content"] for m in msgs if m.get("role") == "user"]
                lengths.append(len(user[-1]) if user else 0)
            if "gold_depth" in read:
                depths.append(read["gold_depth"])
                positions_0 += read.get("gold_position") == 0
            if example is None:
                example = {"file": str(f), "id": row.get("id"), "messages": msgs, "meta": meta}
            count += 1
        by_file[str(f)] = count
        n += count
    if n == 0:
        raise DataError(f"{path}: no rows")
    hist = [0] * BINS
    for d in depths:
        hist[min(int(d * BINS), BINS - 1)] += 1
    return {
        "path": str(path),
        "files": by_file,
        "n": n,
        "length_unit": unit,
        "prompt_length": stats(lengths, 1),
        "conversation_tokens": stats(conv, 1) if conv else None,
        "gold_depth_histogram": hist if depths else None,
        "gold_position_0": positions_0,
        "example": example,
    }


def _clip(text: str, head: int = 300, tail: int = 300) -> str:
    if len(text) <= head + tail + 20:
        return text
    return f"{text[:head]}\n  [... {len(text) - head - tail} characters ...]\n{text[-tail:]}"


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_data`'s summary."""
    p = s["prompt_length"]
    lines = [f"{s['path']}: {s['n']} rows in {len(s['files'])} file(s)"]
    lines += [f"  {f}: {k}" for f, k in s["files"].items()]
    lines.append(
        f"prompt length ({s['length_unit']}): min {p['min']}  mean {p['mean']}  max {p['max']}"
    )
    if s["conversation_tokens"]:
        c = s["conversation_tokens"]
        lines.append(
            f"conversation tokens (chat template): min {c['min']}  mean {c['mean']}  max {c['max']}"
        )
    hist = s["gold_depth_histogram"]
    if hist:
        lines.append(
            f"gold position (relative depth; {s['gold_position_0']} rows at the first dictionary):"
        )
        top = max(hist) or 1
        for i, k in enumerate(hist):
            lo, hi = i / BINS, (i + 1) / BINS
            lines.append(f"  {lo:.1f}-{hi:.1f} {k:6d} {'#' * round(40 * k / top)}")
    ex = s["example"]
    lines.append(f"example ({ex['id'] or ex['file']}):")
    for m in ex["messages"]:
        lines.append(f"  [{m.get('role')}] " + _clip(str(m["content"])).replace("\n", "\n    "))
    return "\n".join(lines)
