"""``needlework generate``: sample tasks, fit them to the token budget and write the dataset.

Run:  needlework generate --config configs/datagen/tiny_cpu.yaml

Layout (docs/formats.md §A)::

    <out_dir>/config.yaml, run.json, manifest.json
    <out_dir>/seed<S>/{train,eval}.jsonl            canonical rows
    <out_dir>/seed<S>/{train,eval}.openai.jsonl     OpenAI fine-tuning lines
    <out_dir>/seed<S>/{train,eval}.trl.jsonl        TRL prompt/completion rows
    <out_dir>/seed<S>/hf/  and  seed<S>/{train,eval}.parquet

Determinism: sample ``k`` of a split draws only from ``Random("<generator>:<seed>:<split>:<k>")``
and the split's gold positions from one RNG keyed the same way, so a sample depends on nothing
but its config, seed, split and index.

Atomicity: everything is written into a hidden staging folder next to ``out_dir`` and renamed
into place at the end; an error or Ctrl-C removes the staging folder, so no partial dataset is
ever left under ``out_dir``. All checks (config, tokenizer, budget, output path) run first.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field
from typing_extensions import TypedDict

from needlework.config import Distinct, NonEmptyStr, NonNegativeInt, PositiveInt, config, validate
from needlework.datagen import budget as budget_mod
from needlework.datagen.base import Generator, Slot, Task
from needlework.datagen.dicts import gold_position_plan
from needlework.datagen.formatting import SYSTEM_MESSAGE
from needlework.datagen.writer import (
    SplitWriter,
    check_disjoint,
    check_target,
    finish,
    progress_bar,
    write_hf,
)
from needlework.errors import UserError
from needlework.io import iter_jsonl, staged_dir
from needlework.records import Message, Turns
from needlework.registry import generators
from needlework.tokenization import TokenCounter, TokenizerSpec, load_counter

FORMATS: tuple[Literal["openai", "trl", "hf", "parquet"], ...] = ("openai", "trl", "hf", "parquet")
SPLITS = ("train", "eval")


@config
class MatchTokens:
    """Size the training split to another dataset's token count (equal-token baselines, as the
    paper compares its baselines "at roughly the same number of training tokens")."""

    dataset: Path
    """The generated dataset to match: its ``seed<S>/train.jsonl`` for each of our seeds."""
    count: Literal["answer", "total"] = "answer"
    """``answer``: assistant-turn tokens (what answer-only loss trains on); ``total``: whole
    conversations, chat template included."""


@config
class GenerateConfig:
    """What ``needlework generate`` builds: one generator, a tokenizer budget, seeds, outputs."""

    generator: Annotated[Generator, generators]
    """The task family and its knobs (``name: simple_dict_kv`` or ``multi_subkey_dict_kv``)."""
    out_dir: Path
    """Dataset folder; replaced atomically (only if empty or an earlier needlework dataset)."""
    tokenizer: TokenizerSpec = "mistral:v1"
    """Token counter spec: char, whitespace, hf:<dir>, tiktoken:<enc>[@file], mistral:<v1|v3|..>."""
    max_context_tokens: Annotated[int, Field(ge=16)] = 4096
    """Context budget of the target model (4096 = Mistral-7B's sliding window, the paper's)."""
    reserve_tokens: NonNegativeInt = 100
    """Prompts must stay below max_context_tokens - reserve_tokens (official: 100)."""
    seeds: Annotated[tuple[int, ...], Field(min_length=1), Distinct] = (0,)
    """One dataset per seed (paper: 0, 1, 2), in seed<S>/ folders."""
    num_train: NonNegativeInt = 350
    """Training samples per seed (paper: 350)."""
    num_eval: NonNegativeInt = 150
    """Evaluation samples per seed (paper: 150)."""
    formats: Annotated[tuple[Literal["openai", "trl", "hf", "parquet"], ...], Distinct] = FORMATS
    """Extra outputs besides the canonical JSONL (hf/parquet need the datasets package)."""
    system_message: NonEmptyStr = SYSTEM_MESSAGE
    """System turn of the OpenAI rows (the official get_openai_entry text)."""
    max_tries: PositiveInt = 1000
    """Draws per sample before giving up on the budget (official: 1000)."""
    match_tokens: MatchTokens | None = None
    """Replace ``num_train`` by as many samples as reach another dataset's training tokens;
    the manifest records the target and the count reached."""

    def __post_init__(self) -> None:
        if self.reserve_tokens >= self.max_context_tokens:
            raise ValueError(
                f"reserve_tokens: must be < max_context_tokens ({self.max_context_tokens}), "
                f"got {self.reserve_tokens}"
            )
        if self.num_train + self.num_eval == 0:
            raise ValueError("num_train: num_train and num_eval must not both be 0")

    @property
    def generator_name(self) -> str:
        return type(self.generator).registry_name  # type: ignore[attr-defined]

    @functools.cached_property
    def budget(self) -> budget_mod.Budget:
        return budget_mod.Budget(self.max_context_tokens, self.reserve_tokens)


def plan_num_units(cfg: GenerateConfig, counter: TokenCounter, seed: int) -> int:
    """The number of units (dictionaries, passages) for ``seed``: fixed and checked, or found
    by search."""
    key = f"{cfg.generator_name}:{seed}"
    fixed = cfg.generator.num_units
    if fixed is None:
        return budget_mod.fit_num_units(cfg.generator, counter, cfg.budget, key=key)
    budget_mod.check_fixed(cfg.generator, counter, cfg.budget, fixed, key=key)
    return fixed


def iter_rows(
    cfg: GenerateConfig,
    counter: TokenCounter,
    seed: int,
    split: str,
    num_units: int,
    indices: range,
    sizes: dict[str, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Canonical rows of ``split`` for the sample ``indices`` (any slice gives the same rows).
    ``sizes`` are the split sizes (the config's unless the training split is token-matched)."""
    gen, name = cfg.generator, cfg.generator_name
    sizes = sizes or split_sizes(cfg)
    total = sizes[split]
    offset = 0 if split == "train" else sizes["train"]
    plan_rng = random.Random(f"{name}:{seed}:{split}:positions")
    positions = gold_position_plan(plan_rng, total, num_units, gen.frac_0, gen.frac_top5).positions
    size_key = f"num_{gen.unit}"
    for index in indices:
        rng = random.Random(f"{name}:{seed}:{split}:{index}")  # the only RNG sample index uses
        pos = positions[index]
        slot = Slot(seed, split, index, offset + index)

        def build(rng: random.Random = rng, pos: int = pos, slot: Slot = slot) -> Task:
            return gen.build(rng, num_units, pos, slot)

        task, p, c, draws = budget_mod.accept(build, counter, cfg.budget, cfg.max_tries, size_key)
        meta: dict[str, Any] = {
            "generator": name,
            "seed": seed,
            "split": split,
            "index": index,
            "prompt_tokens": p,
            "conversation_tokens": c,
            "answer_tokens": counter.count(task.answer),
            size_key: num_units,
            "gold_position": pos,
            "gold_depth": round(pos / (num_units - 1), 6) if num_units > 1 else 0.0,
        }
        meta.update({k: v for k, v in task.meta.items() if k not in meta})
        meta.update(
            {
                "tokenizer": counter.name,
                "max_context_tokens": cfg.max_context_tokens,
                "draws": draws,
            }
        )
        if task.questions:
            meta["questions"] = list(task.questions)
        row_id = f"{name}-{seed}-{split}-{index}"
        yield {"id": row_id, "messages": budget_mod.messages(task), "meta": meta}


def split_sizes(cfg: GenerateConfig) -> dict[str, int]:
    return {"train": cfg.num_train, "eval": cfg.num_eval}


def _needs_datasets(cfg: GenerateConfig) -> bool:
    if not {"hf", "parquet"} & set(cfg.formats):
        return False
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UserError(
            "formats: 'hf'/'parquet' need the datasets package (pip install "
            "'needlework[train]') or drop them from formats"
        ) from None
    return True


class _TrainRow(TypedDict):
    """What token matching reads of another dataset's training row (other keys are ignored)."""

    messages: Turns


def token_target(cfg: GenerateConfig, counter: TokenCounter, seed: int) -> int:
    """Tokens of the reference dataset's training split for ``seed`` (``match_tokens``),
    counted with this dataset's tokenizer so both sides are measured alike."""
    match = cfg.match_tokens
    assert match is not None
    path = Path(match.dataset) / f"seed{seed}" / "train.jsonl"
    if not path.is_file():
        raise UserError(
            f"match_tokens.dataset: {path} not found (expected a generated dataset with seed "
            f"{seed}; generate it first)"
        )
    total = 0
    for lineno, raw in iter_jsonl(path):
        msgs: list[Message] = validate(_TrainRow, raw, source=f"{path}:{lineno}")["messages"]
        answer = match.count == "answer"
        total += counter.count(msgs[-1]["content"]) if answer else counter.count_chat(msgs)
    if total == 0:
        raise UserError(f"match_tokens.dataset: {path} has no training tokens")
    return total


def matched_train_size(
    cfg: GenerateConfig, counter: TokenCounter, seed: int, num_units: int, target: int
) -> int:
    """Training samples whose tokens first reach ``target``, measured on a trial draw (the
    written split is redrawn at that size, so its count lands within a sample of the target)."""
    assert cfg.match_tokens is not None
    key = "answer_tokens" if cfg.match_tokens.count == "answer" else "conversation_tokens"
    guess = max(8, cfg.num_train)
    while True:
        sizes = {"train": guess, "eval": 0}
        total = 0
        for n, row in enumerate(
            iter_rows(cfg, counter, seed, "train", num_units, range(guess), sizes), 1
        ):
            total += row["meta"][key]
            if total >= target:
                return n
        guess *= 2


def generate(cfg: GenerateConfig, *, progress: bool = True) -> dict[str, Any]:
    """Write the dataset described by ``cfg``; returns the manifest (and ``out_dir``)."""
    from needlework.runinfo import write_run_info

    counter = load_counter(cfg.tokenizer)
    check_target(cfg.out_dir)
    with_hf = _needs_datasets(cfg)
    unit = cfg.generator.unit
    plan = {seed: plan_num_units(cfg, counter, seed) for seed in cfg.seeds}
    sizes = {seed: split_sizes(cfg) for seed in cfg.seeds}
    matched: dict[str, Any] = {}
    if cfg.match_tokens is not None:
        for seed in cfg.seeds:
            goal = token_target(cfg, counter, seed)
            n = matched_train_size(cfg, counter, seed, plan[seed], goal)
            sizes[seed] = {"train": n, "eval": cfg.num_eval}
            matched[str(seed)] = {
                "reference": str(cfg.match_tokens.dataset),
                "count": cfg.match_tokens.count,
                "target_tokens": goal,
                "num_train": n,
            }
    total = sum(sizes[seed][s] for s in SPLITS for seed in cfg.seeds)
    seeds: dict[str, Any] = {}
    questions: set[str] = set()
    with (
        staged_dir(cfg.out_dir) as stage,
        progress_bar(total, progress, cfg.generator_name) as bar,
    ):
        write_run_info(stage, cfg, **{f"num_{unit}": {str(s): n for s, n in plan.items()}})
        for seed, num_units in plan.items():
            writers = _write_seed(stage, cfg, counter, seed, num_units, sizes[seed], with_hf, bar)
            seeds[str(seed)] = seed_summary(unit, num_units, writers, matched.get(str(seed)))
            questions.update(q for w in writers.values() for q in w.questions)
        header = {
            "generator": cfg.generator_name,
            "tokenizer": cfg.tokenizer,
            "max_context_tokens": cfg.max_context_tokens,
            "reserve_tokens": cfg.reserve_tokens,
        }
        manifest = finish(stage, header, seeds, questions)
    return {**manifest, "out_dir": str(cfg.out_dir)}


def _write_seed(
    stage: Path,
    cfg: GenerateConfig,
    counter: TokenCounter,
    seed: int,
    num_units: int,
    sizes: dict[str, int],
    with_hf: bool,
    bar: Any,
) -> dict[str, SplitWriter]:
    """Write one seed's split files (and their ``datasets`` copies when asked), after checking
    no sample is in both splits. Returns the split writers."""
    folder = stage / f"seed{seed}"
    folder.mkdir()
    writers = {}
    with contextlib.ExitStack() as stack:
        for split in (s for s in SPLITS if sizes[s] > 0):
            w = writers[split] = SplitWriter(
                folder,
                split,
                counter,
                stack,
                formats=cfg.formats,
                system_message=cfg.system_message,
                keep_rows=with_hf,
            )
            bar.set_postfix({"seed": seed, "split": split, f"num_{cfg.generator.unit}": num_units})
            for row in iter_rows(cfg, counter, seed, split, num_units, range(sizes[split]), sizes):
                w.add(row)
                bar.update()
    check_disjoint(writers, seed)
    if with_hf:
        # keep_rows=with_hf: every writer kept its rows
        kept = {s: cast("list[dict[str, Any]]", w.rows) for s, w in writers.items()}
        write_hf(folder, kept, cfg.formats)
    return writers


def seed_summary(
    unit: str, num_units: int, writers: dict[str, SplitWriter], matched: dict[str, Any] | None
) -> dict[str, Any]:
    """One seed's manifest entry; with token matching, the target and the count reached."""
    out: dict[str, Any] = {
        f"num_{unit}": num_units,
        "splits": {s: w.summary() for s, w in writers.items()},
    }
    if matched is not None and "train" in writers:
        train = out["splits"]["train"]
        key = "total_answer_tokens" if matched["count"] == "answer" else "total_conversation_tokens"
        out["token_match"] = {**matched, "reached_tokens": train[key]}
    return out
