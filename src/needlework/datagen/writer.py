"""Writing a dataset folder: staging + atomic rename, streamed rows, HF files, manifest.

Everything goes into a hidden staging folder beside the target and is renamed into place at the
end; an error or Ctrl-C removes the staging folder, so no partial dataset is ever left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from needlework.datagen.formatting import openai_report, openai_row, stats, trl_row
from needlework.errors import DataError, UserError
from needlework.heldout import held_out_entry
from needlework.io import STAGE_LOCK, check_creatable, dumps, sha256_file, write_json
from needlework.tokenization import TokenCounter

MANIFEST_FORMAT = "needlework-dataset/1"


def is_dataset_dir(path: Path) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def check_target(path: Path) -> None:
    """Fail before any work if ``path`` cannot receive a dataset (nothing is created)."""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"out_dir: {path} exists and is not a folder")
        if any(path.iterdir()) and not is_dataset_dir(path):
            raise UserError(
                f"out_dir: {path} is not empty and holds no needlework dataset "
                "(refusing to replace it)"
            )
    check_creatable(path, f"out_dir: {path}")


class SplitWriter:
    """Streams one split's rows into its JSONL files; keeps what the manifest needs."""

    def __init__(
        self,
        folder: Path,
        split: str,
        counter: TokenCounter,
        stack: contextlib.ExitStack,
        *,
        formats: Sequence[str],
        system_message: str,
        keep_rows: bool,
    ):
        self.counter, self.system_message = counter, system_message
        self.files = {
            "canonical": stack.enter_context(
                (folder / f"{split}.jsonl").open("w", encoding="utf-8")
            )
        }
        for fmt in ("openai", "trl"):
            if fmt in formats:
                self.files[fmt] = stack.enter_context(
                    (folder / f"{split}.{fmt}.jsonl").open("w", encoding="utf-8")
                )
        self.metas: list[dict[str, Any]] = []
        self.openai_tokens: list[int] = []
        self.rows: list[dict[str, Any]] | None = [] if keep_rows else None
        self.digests: set[bytes] = set()
        self.questions: set[str] = set()

    def add(self, row: dict[str, Any]) -> None:
        self.files["canonical"].write(dumps(row) + "\n")
        if "openai" in self.files:
            o = openai_row(row, self.system_message)
            self.files["openai"].write(dumps(o) + "\n")
            self.openai_tokens.append(self.counter.count_chat(o["messages"]))
        if "trl" in self.files:
            self.files["trl"].write(dumps(trl_row(row)) + "\n")
        self.metas.append(row["meta"])
        self.questions.update(row["meta"].get("questions", ()))
        self.digests.add(
            hashlib.blake2b(row["messages"][0]["content"].encode(), digest_size=16).digest()
        )
        if self.rows is not None:
            self.rows.append(row)

    def summary(self) -> dict[str, Any]:
        m = self.metas
        out: dict[str, Any] = {"n": len(m)}
        if m:
            positions = [x["gold_position"] for x in m]
            deciles = [0] * 10
            for x in m:
                deciles[min(int(x["gold_depth"] * 10), 9)] += 1
            out.update(
                {
                    "first_index": m[0]["index"],
                    "last_index": m[-1]["index"],
                    "prompt_tokens": stats([x["prompt_tokens"] for x in m]),
                    "conversation_tokens": stats([x["conversation_tokens"] for x in m]),
                    "answer_tokens": stats([x["answer_tokens"] for x in m]),
                    "total_conversation_tokens": sum(x["conversation_tokens"] for x in m),
                    "total_answer_tokens": sum(x["answer_tokens"] for x in m),
                    "gold_position_0": positions.count(0),
                    "gold_depth_deciles": deciles,
                    "redraws": sum(x["draws"] - 1 for x in m),
                }
            )
        if "openai" in self.files:
            out["openai"] = openai_report(self.openai_tokens, self.counter.name)
        return out


def write_hf(folder: Path, rows: dict[str, list[dict[str, Any]]], formats) -> None:
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # ours is the one progress bar
    try:
        parts = {split: datasets.Dataset.from_list(r) for split, r in rows.items() if r}
        if "hf" in formats and parts:
            datasets.DatasetDict(parts).save_to_disk(str(folder / "hf"))
        if "parquet" in formats:
            for split, ds in parts.items():
                ds.to_parquet(str(folder / f"{split}.parquet"))
    finally:
        if bars:
            datasets.enable_progress_bars()


def finish(
    stage: Path, header: dict[str, Any], seeds: dict[str, Any], questions: set[str]
) -> dict[str, Any]:
    """Write ``manifest.json``: ``header`` (generator, tokenizer, budget), each seed's summary,
    every file's sha256 and size, and the real questions used (for evaluation to hold out)."""
    files = {}
    for path in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != STAGE_LOCK):
        rel = path.relative_to(stage).as_posix()
        if rel not in ("run.json", "manifest.json"):
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        **header,
        "shard": None,  # no longer written in shards; kept so manifests stay byte-identical
        "seeds": seeds,
        "files": files,
    }
    if questions:  # real benchmark questions used (any split, any seed): evaluation holds them out
        manifest["held_out"] = held_out_entry(questions)
    write_json(stage / "manifest.json", manifest)
    return manifest


def check_disjoint(writers: dict[str, SplitWriter], seed: int) -> None:
    if "train" in writers and "eval" in writers:
        shared = writers["train"].digests & writers["eval"].digests
        if shared:
            raise DataError(f"seed {seed}: {len(shared)} identical prompt(s) in train and eval")


def progress_bar(total: int | None, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="sample", desc=desc, dynamic_ncols=True)
