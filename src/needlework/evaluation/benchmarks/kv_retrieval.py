"""Key-value retrieval: needlework's synthetic dictionary task ("From Artificial Needles to Real
Haystacks", Xiong et al., ICLR 2025, §2) and the UUID JSON task of "Lost in the Middle" (Liu et
al., 2023, arXiv:2307.03172).

Run:  needlework eval --config configs/eval/kv_retrieval.yaml model.path=<model dir>

``source: needlework`` reads the canonical rows of ``needlework generate``
(``seed<S>/eval.jsonl``: ``messages`` + ``meta``) and scores value / dictionary / both from the
parsed answer (``metrics.parse_kv_answer``). ``source: lost_in_the_middle`` reads
``kv-retrieval-*_keys.jsonl.gz``, renders the exact ``kv_retrieval`` prompt and scores "gold
value in the answer" as the reference does, optionally moving the gold record to given positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from typing_extensions import NotRequired, TypedDict

from needlework.config import NonNegativeInt, PositiveInt, config, validate
from needlework.errors import DataError
from needlework.evaluation.base import Benchmark
from needlework.evaluation.benchmarks.common import (
    Positions,
    Tag,
    seeded_subset,
    user_turn,
    with_context_tokens,
)
from needlework.evaluation.metrics import (
    depth_bin,
    format_match,
    kv_substring_match,
    numbers_in_key,
    parse_kv_answer,
    same_value,
)
from needlework.records import Figure, Sample, validate_messages
from needlework.registry import benchmarks
from needlework.sources.data import (
    KVRecord,
    download_verified,
    litm_checksums,
    read_records,
    read_rows,
)
from needlework.sources.prompts import load_prompt


class Meta(TypedDict):
    """What a needlework eval row's ``meta`` must carry (and the optional fields kept)."""

    gold_key: str | int | list[Any]
    gold_value: str | int
    gold_dict_name: str | int
    gold_position: NonNegativeInt
    num_dicts: PositiveInt
    gold_depth: NotRequired[Any]
    prompt_tokens: NotRequired[Any]
    generator: NotRequired[Any]
    seed: NotRequired[Any]
    split: NotRequired[Any]
    index: NotRequired[Any]


class Row(TypedDict):
    """One line of a needlework ``eval.jsonl`` (``needlework generate``)."""

    id: NotRequired[Any]
    messages: list[Any]
    meta: Meta


def format_kv_records(records: list[tuple[str, str]]) -> str:
    """``{"k1": "v1",\\n "k2": "v2",\\n ... "kn": "vn"}``, as Lost in the Middle renders it."""
    lines = [f'"{k}": "{v}"' for k, v in records]
    return "{" + ",\n ".join(lines) + "}"


def kv_prompt(records: list[tuple[str, str]], key: str, query_aware: bool = False) -> str:
    """The Lost-in-the-Middle ``kv_retrieval`` prompt (trailing newline of the file stripped)."""
    name = "kv_retrieval_with_query_aware_contextualization" if query_aware else "kv_retrieval"
    return (
        load_prompt(name)
        .rstrip("\n")
        .format(formatted_kv_records=format_kv_records(records), key=key)
    )


def move_record(
    records: tuple[tuple[str, str], ...], key: str, position: int | None
) -> list[tuple[str, str]]:
    """The records with the one for ``key`` popped and re-inserted at ``position`` (None: as
    they are)."""
    out = list(records)
    if position is not None:
        out.insert(position, out.pop(next(i for i, (k, _) in enumerate(out) if k == key)))
    return out


@benchmarks.register("kv_retrieval")
@config
class KVRetrieval(Benchmark):
    """Key-value retrieval: synthetic dictionaries or UUID JSON records (Lost in the Middle)."""

    data_path: str = "data/smollm2_kv_demo/seed0/eval.jsonl"
    """needlework ``eval.jsonl`` (the default is what ``needlework generate --config
    configs/datagen/smollm2_kv_demo.yaml`` writes), or a Lost-in-the-Middle
    ``kv-retrieval-*_keys.jsonl.gz``."""
    source: Literal["needlework", "lost_in_the_middle"] = "needlework"
    """Which format ``data_path`` is in."""
    gold_positions: Positions = ()
    """lost_in_the_middle only: move the gold record to each of these 0-based indices (one sample
    per record and position); empty keeps the file's order."""
    download: bool = False
    """lost_in_the_middle only: if ``data_path`` is missing and named like an upstream file
    (``kv-retrieval-75_keys.jsonl.gz``, 140, 300), fetch it at the pinned commit and verify it."""
    query_aware: bool = False
    """lost_in_the_middle only: the query-aware-contextualization prompt (key also on top)."""
    num_samples: PositiveInt | None = None
    """Seeded subset of the file's rows; None = all."""
    seed: int = 0
    """Chooses the subset."""
    depth_bins: PositiveInt = 10
    """Equal-width bins of the gold depth (``gold_depth_bin`` group)."""
    tokenizer: str | None = None
    """``load_counter`` spec to record ``context_tokens`` (needlework rows carry prompt_tokens)."""
    tag: Tag = ""
    """Appended to the label, to tell variants apart (e.g. ``wtemplate``)."""
    max_new_tokens: Annotated[PositiveInt | None, Field(validate_default=True)] = None
    """None: Lost in the Middle's 100 for its files; for needlework rows, sized by the runner
    from the longest gold answer in the model's tokens (the answer has a fixed format, so a
    model that keeps talking past it is wrong anyway and is not worth 100 tokens of decoding)."""

    @field_validator("max_new_tokens")
    @classmethod
    def _litm_budget(cls, value: int | None, info: ValidationInfo) -> int | None:
        return 100 if value is None and info.data.get("source") == "lost_in_the_middle" else value

    def __post_init__(self) -> None:
        if self.gold_positions and self.source != "lost_in_the_middle":
            raise ValueError(
                "gold_positions: only for source lost_in_the_middle (needlework "
                "rows are generated with their gold position)"
            )

    group_by = ("gold_position", "gold_depth_bin")
    # did the answer follow the template: tells "learnt the format" from "learnt retrieval"
    secondary_metrics = ("format_match",)

    @property
    def primary_metric(self) -> str:
        return "both_correct" if self.source == "needlework" else "substring_match"

    needs_token_counter = False  # the tokenizer only records context_tokens
    report_rank = 30

    def figures(self) -> tuple[Figure, ...]:
        return (
            Figure(
                "line",
                heading="KV retrieval ({label}): accuracy by gold key position",
                name="by_position",
                x="gold_position",
                x_axis="position",
                what="gold key",
                bins="gold_depth_bin",
                size="num_dicts",
                title="KV retrieval: {metrics} by gold key position",
                caption="KV retrieval ({label}) by gold key position",
            ),
        )

    def label(self) -> str:
        base = "kv_retrieval"
        if self.source == "lost_in_the_middle":
            m = re.search(r"(\d+)_keys", Path(self.data_path).name)
            base += f"_litm{m.group(1)}" if m else "_litm"
        return base + (f"_{self.tag}" if self.tag else "")

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        meta = sample.meta
        if self.source == "lost_in_the_middle":
            return {"substring_match": kv_substring_match(meta["gold_value"], output)}
        parsed = parse_kv_answer(output, numbers_in_key(meta["gold_key"]))
        value_ok = same_value(parsed.value, meta["gold_value"])
        dict_ok = (
            parsed.dict_name is not None
            and parsed.dict_name.strip() == str(meta["gold_dict_name"]).strip()
        )
        return {
            "value_correct": float(value_ok),
            "dict_correct": float(dict_ok),
            "both_correct": float(value_ok and dict_ok),
            "value_in_output": kv_substring_match(str(meta["gold_value"]), output),
            "format_match": format_match(output, sample.answers[0]),
        }

    def samples(self) -> Iterator[Sample]:
        make = self._litm if self.source == "lost_in_the_middle" else self._needlework
        yield from with_context_tokens(make(), self.tokenizer)

    def _bin(self, position: int, count: int) -> float:
        return depth_bin(position / (count - 1) if count > 1 else 0.0, self.depth_bins)

    def _needlework(self) -> Iterator[Sample]:
        if not Path(self.data_path).exists():
            raise DataError(
                f"{self.data_path}: not found; make an eval split with `needlework generate "
                "--config configs/datagen/smollm2_kv_demo.yaml` (the default path) or set "
                "data_path to a generated eval.jsonl"
            )
        rows = list(read_rows(self.data_path))
        for k in seeded_subset(len(rows), self.num_samples, self.seed, "kv_retrieval"):
            where, raw = rows[k]
            row: Row = validate(Row, raw, source=where)
            turns: tuple[Any, ...] = validate_messages(row["messages"], where)
            meta: dict[str, Any] = dict(row["meta"])
            if meta["gold_position"] >= meta["num_dicts"]:
                raise DataError(
                    f"{where}: field 'meta.gold_position': expected < num_dicts "
                    f"({meta['num_dicts']}), got {meta['gold_position']}"
                )
            meta["gold_depth_bin"] = self._bin(meta["gold_position"], meta["num_dicts"])
            sid = str(row.get("id") or f"kv_retrieval-{Path(self.data_path).stem}-{k}")
            yield Sample(sid, turns[:-1], (turns[-1]["content"],), meta)

    def _litm(self) -> Iterator[Sample]:
        records = read_records(self._litm_path(), KVRecord)
        stem = Path(self.data_path).name.split(".")[0]
        for k in seeded_subset(len(records), self.num_samples, self.seed, "kv_retrieval"):
            rec = records[k]
            n = len(rec.ordered_kv_records)
            for pos in self.gold_positions or (None,):
                if pos is not None and pos >= n:
                    raise DataError(f"{rec.where}: gold position {pos} but only {n} records")
                order = move_record(rec.ordered_kv_records, rec.key, pos)
                gold = next(i for i, (key, _) in enumerate(order) if key == rec.key)
                sid = f"kv_retrieval-{stem}-{k}" + (f"-g{pos}" if pos is not None else "")
                meta = {
                    "gold_key": rec.key,
                    "gold_value": rec.value,
                    "gold_position": gold,
                    "num_keys": n,
                    "gold_depth_bin": self._bin(gold, n),
                }
                yield Sample(
                    sid, user_turn(kv_prompt(order, rec.key, self.query_aware)), (rec.value,), meta
                )

    def _litm_path(self) -> Path:
        path = Path(self.data_path)
        if path.exists() or not self.download:
            return path
        table = litm_checksums()
        upstream = next((k for k in table if Path(k).name == path.name), None)
        if upstream is None:
            raise DataError(f"{path}: not found, and no upstream file has this name to download")
        return download_verified(upstream, path, table)
