"""``needlework generate``: sample tasks, fit them to the token budget and write the dataset.

Run:  needlework generate --config configs/datagen/tiny_cpu.yaml

Layout (docs/formats.md §A)::

    <out_dir>/config.yaml, run.json, manifest.json
    <out_dir>/seed<S>/{train,eval}.jsonl            canonical rows
    <out_dir>/seed<S>/{train,eval}.openai.jsonl     OpenAI fine-tuning lines
    <out_dir>/seed<S>/{train,eval}.trl.jsonl        TRL prompt/completion rows
    <out_dir>/seed<S>/hf/  and  seed<S>/{train,eval}.parquet

Determinism and sharding: sample ``k`` of a split draws only from
``Random("<generator>:<seed>:<split>:<k>")`` and the split's gold positions from one RNG keyed
the same way, so a sample does not depend on which shard makes it. ``--shard i/n`` writes the
i-th contiguous slice of every split to ``<out_dir>.shards/<i>-of-<n>/`` and the shards'
JSONL files concatenated in order equal the unsharded files byte for byte
(:func:`merge_shards` rebuilds the full folder).

Atomicity: everything is written into a hidden staging folder next to ``out_dir`` and renamed
into place at the end; an error or Ctrl-C removes the staging folder, so no partial dataset is
ever left under ``out_dir``. All checks (config, tokenizer, budget, output path) run first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from needlework.config import config
from needlework.datagen import budget as budget_mod
from needlework.datagen.base import Generator, Slot, Task
from needlework.datagen.dicts import gold_positions
from needlework.datagen.formatting import SYSTEM_MESSAGE, canonical_row
from needlework.datagen.writer import (
    SplitWriter,
    check_disjoint,
    check_target,
    finish,
    is_dataset_dir,
    progress_bar,
    write_hf,
)
from needlework.errors import UserError
from needlework.io import read_jsonl, sha256_file, staged_dir
from needlework.registry import generators
from needlework.tokenization import TokenCounter, check_spec, load_counter

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
    tokenizer: str = "mistral:v1"
    """Token counter spec: char, whitespace, hf:<dir>, tiktoken:<enc>[@file], mistral:<v1|v3|..>."""
    max_context_tokens: int = 4096
    """Context budget of the target model (4096 = Mistral-7B's sliding window, the paper's)."""
    reserve_tokens: int = 100
    """Prompts must stay below max_context_tokens - reserve_tokens (official: 100)."""
    seeds: tuple[int, ...] = (0,)
    """One dataset per seed (paper: 0, 1, 2), in seed<S>/ folders."""
    num_train: int = 350
    """Training samples per seed (paper: 350)."""
    num_eval: int = 150
    """Evaluation samples per seed (paper: 150)."""
    formats: tuple[Literal["openai", "trl", "hf", "parquet"], ...] = FORMATS
    """Extra outputs besides the canonical JSONL (hf/parquet need the datasets package)."""
    system_message: str = SYSTEM_MESSAGE
    """System turn of the OpenAI rows (the official get_openai_entry text)."""
    max_tries: int = 1000
    """Draws per sample before giving up on the budget (official: 1000)."""
    match_tokens: MatchTokens | None = None
    """Replace ``num_train`` by as many samples as reach another dataset's training tokens;
    the manifest records the target and the count reached."""

    def __post_init__(self) -> None:
        if self.max_context_tokens < 16:
            raise ValueError(f"max_context_tokens: must be >= 16, got {self.max_context_tokens}")
        if not 0 <= self.reserve_tokens < self.max_context_tokens:
            raise ValueError(
                f"reserve_tokens: must be in [0, max_context_tokens), got {self.reserve_tokens}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(
                f"seeds: expected a non-empty list of distinct ints, got {list(self.seeds)}"
            )
        if self.num_train < 0 or self.num_eval < 0 or self.num_train + self.num_eval == 0:
            raise ValueError("num_train: num_train and num_eval must be >= 0, not both 0")
        if self.max_tries < 1:
            raise ValueError(f"max_tries: must be >= 1, got {self.max_tries}")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats: duplicates in {list(self.formats)}")
        check_spec(self.tokenizer)

    @property
    def generator_name(self) -> str:
        return type(self.generator).registry_name  # type: ignore[attr-defined]


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): shard 1 (0-based) of 4."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected I/N with integers, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard: expected 0 <= I < N, got {text!r}")
    return i, n


def check_num_shards(n: int) -> int:
    """``--merge N``: the number of shards to combine must be a positive count."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"--merge: expected the number of shards N >= 1, got {n!r}")
    return n


def sample_rng(generator: str, seed: int, split: str, index: int) -> random.Random:
    """The only RNG sample ``index`` uses: independent of shards and of every other sample."""
    return random.Random(f"{generator}:{seed}:{split}:{index}")


def shard_range(n: int, shard: tuple[int, int] | None) -> range:
    if shard is None:
        return range(n)
    i, k = shard
    return range(i * n // k, (i + 1) * n // k)


def plan_num_units(cfg: GenerateConfig, counter: TokenCounter, seed: int) -> int:
    """The number of units (dictionaries, passages) for ``seed``: fixed and checked, or found
    by search."""
    budget = budget_mod.Budget(cfg.max_context_tokens, cfg.reserve_tokens)
    key = f"{cfg.generator_name}:{seed}"
    fixed = cfg.generator.num_units
    if fixed is None:
        return budget_mod.fit_num_units(cfg.generator, counter, budget, key=key)
    budget_mod.check_fixed(cfg.generator, counter, budget, fixed, key=key)
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
    positions = gold_positions(
        random.Random(f"{name}:{seed}:{split}:positions"),
        total,
        num_units,
        gen.frac_0,
        gen.frac_top5,
    )
    budget = budget_mod.Budget(cfg.max_context_tokens, cfg.reserve_tokens)
    size_key = f"num_{gen.unit}"
    for index in indices:
        rng = sample_rng(name, seed, split, index)
        pos = positions[index]
        slot = Slot(seed, split, index, offset + index)

        def build(rng: random.Random = rng, pos: int = pos, slot: Slot = slot) -> Task:
            return gen.build(rng, num_units, pos, slot)

        task, p, c, draws = budget_mod.accept(build, counter, budget, cfg.max_tries, size_key)
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
        yield canonical_row(f"{name}-{seed}-{split}-{index}", budget_mod.messages(task), meta)


def split_sizes(cfg: GenerateConfig) -> dict[str, int]:
    return {"train": cfg.num_train, "eval": cfg.num_eval}


def _needs_datasets(cfg: GenerateConfig, shard: tuple[int, int] | None) -> bool:
    if shard is not None or not {"hf", "parquet"} & set(cfg.formats):
        return False
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UserError(
            "formats: 'hf'/'parquet' need the datasets package (pip install "
            "'needlework[train]') or drop them from formats"
        ) from None
    return True


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
    for lineno, row in enumerate(read_jsonl(path), 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict):
            raise UserError(f"match_tokens.dataset: {path}:{lineno}: expected a 'messages' list")
        total += (
            counter.count(str(msgs[-1].get("content", "")))
            if match.count == "answer"
            else counter.count_chat(msgs)
        )
    if total == 0:
        raise UserError(f"match_tokens.dataset: {path} has no training tokens")
    return total


def row_tokens(row: dict[str, Any], count: str) -> int:
    meta = row["meta"]
    return int(meta["answer_tokens"] if count == "answer" else meta["conversation_tokens"])


def matched_train_size(
    cfg: GenerateConfig, counter: TokenCounter, seed: int, num_units: int, target: int
) -> int:
    """Training samples whose tokens first reach ``target``, measured on a trial draw (the
    written split is redrawn at that size, so its count lands within a sample of the target)."""
    assert cfg.match_tokens is not None
    count = cfg.match_tokens.count
    guess = max(8, cfg.num_train)
    while True:
        sizes = {"train": guess, "eval": 0}
        total = 0
        for n, row in enumerate(
            iter_rows(cfg, counter, seed, "train", num_units, range(guess), sizes), 1
        ):
            total += row_tokens(row, count)
            if total >= target:
                return n
        guess *= 2


def generate(
    cfg: GenerateConfig, *, shard: tuple[int, int] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write the dataset described by ``cfg`` (or one shard of it); returns the manifest."""
    from needlework.runinfo import write_run_info

    counter = load_counter(cfg.tokenizer)
    target = (
        cfg.out_dir
        if shard is None
        else Path(f"{cfg.out_dir}.shards") / f"{shard[0]}-of-{shard[1]}"
    )
    check_target(target)
    with_hf = _needs_datasets(cfg, shard)
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
    total = sum(len(shard_range(sizes[seed][s], shard)) for s in SPLITS for seed in cfg.seeds)
    seeds: dict[str, Any] = {}
    questions: set[str] = set()
    with staged_dir(target) as stage, progress_bar(total, progress, cfg.generator_name) as bar:
        write_run_info(
            stage,
            cfg,
            shard=list(shard) if shard else None,
            **{f"num_{unit}": {str(s): n for s, n in plan.items()}},
        )
        for seed, num_units in plan.items():
            rows_of = {
                split: _announced(
                    bar,
                    {"seed": seed, "split": split, f"num_{unit}": num_units},
                    iter_rows(
                        cfg,
                        counter,
                        seed,
                        split,
                        num_units,
                        shard_range(sizes[seed][split], shard),
                        sizes[seed],
                    ),
                )
                for split in SPLITS
                if sizes[seed][split] > 0
            }
            writers = _write_seed(stage, cfg, counter, seed, rows_of, with_hf, bar)
            seeds[str(seed)] = seed_summary(unit, num_units, writers, matched.get(str(seed)))
            questions.update(q for w in writers.values() for q in w.questions)
        manifest = finish(stage, cfg, seeds, shard, questions)
    return {**manifest, "out_dir": str(target)}


def _announced(bar: Any, postfix: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Iterator:
    """``rows``, with the progress bar told what is being written once they start."""
    bar.set_postfix(postfix)
    yield from rows


def _write_seed(
    stage: Path,
    cfg: GenerateConfig,
    counter: TokenCounter,
    seed: int,
    rows_of: Mapping[str, Iterable[dict[str, Any]]],
    with_hf: bool,
    bar: Any,
) -> dict[str, SplitWriter]:
    """Write one seed's split files from each split's rows (and their ``datasets`` copies when
    asked), after checking no sample is in both splits. Returns the split writers."""
    folder = stage / f"seed{seed}"
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        writers = {}
        for split, rows in rows_of.items():
            w = writers[split] = SplitWriter(folder, split, cfg, counter, stack, keep_rows=with_hf)
            for row in rows:
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


def merge_shards(cfg: GenerateConfig, num_shards: int, *, progress: bool = True) -> dict[str, Any]:
    """Concatenate ``<out_dir>.shards/<i>-of-<n>`` into ``out_dir`` (same bytes as unsharded)."""
    from needlework.runinfo import write_run_info

    check_num_shards(num_shards)
    counter = load_counter(cfg.tokenizer)
    root = Path(f"{cfg.out_dir}.shards")
    parts = [root / f"{i}-of-{num_shards}" for i in range(num_shards)]
    missing = [str(p) for p in parts if not is_dataset_dir(p)]
    if missing:
        raise UserError(f"merge: shard folder(s) missing or incomplete: {', '.join(missing)}")
    for i, part in enumerate(parts):
        check_shard(cfg, part, i, num_shards)
    check_target(cfg.out_dir)
    with_hf = _needs_datasets(cfg, None)
    seeds: dict[str, Any] = {}
    questions: set[str] = set()
    with staged_dir(cfg.out_dir) as stage, progress_bar(None, progress, "merge") as bar:
        write_run_info(stage, cfg, merged_from=[str(p) for p in parts])
        unit = cfg.generator.unit
        for seed in cfg.seeds:
            rows_of = {}
            for split in SPLITS:
                files = [p / f"seed{seed}" / f"{split}.jsonl" for p in parts]
                if all(f.is_file() for f in files):
                    rows_of[split] = (row for f in files for row in read_jsonl(f))
            writers = _write_seed(stage, cfg, counter, seed, rows_of, with_hf, bar)
            first = writers["train" if "train" in writers else "eval"].metas[0]
            # every shard planned the same token match; its reached count is the merged one's
            first_shard = json.loads((parts[0] / "manifest.json").read_text(encoding="utf-8"))
            matched = first_shard["seeds"][str(seed)].get("token_match")
            if matched is not None:
                matched = {k: v for k, v in matched.items() if k != "reached_tokens"}
            seeds[str(seed)] = seed_summary(unit, first[f"num_{unit}"], writers, matched)
            questions.update(q for w in writers.values() for q in w.questions)
        manifest = finish(stage, cfg, seeds, None, questions)
    return {**manifest, "out_dir": str(cfg.out_dir)}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values of a loaded YAML mapping (for naming config differences)."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: obj}


def _config_differences(recorded: Any, cfg: GenerateConfig) -> list[str]:
    """``field: shard X, merge Y`` for every resolved-config field (out_dir aside: the shard
    folder is found from it) where a shard's ``config.yaml`` and the merge config differ."""
    import yaml

    from needlework.config import dump_yaml

    def show(value: Any) -> str:
        text = "<absent>" if value is ... else json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= 40 else text[:37] + "..."

    ours = _flatten(yaml.safe_load(dump_yaml(cfg)))
    theirs = _flatten(recorded if isinstance(recorded, dict) else {"<config>": recorded})
    keys = list(ours) + [k for k in theirs if k not in ours]
    return [
        f"{k}: shard {show(theirs.get(k, ...))}, merge {show(ours.get(k, ...))}"
        for k in keys
        if k != "out_dir" and ours.get(k, ...) != theirs.get(k, ...)
    ]


def check_shard(cfg: GenerateConfig, part: Path, index: int, num_shards: int) -> None:
    """Refuse (before anything is written) a shard folder that is not shard ``index`` of
    ``num_shards`` of this very config, or whose files differ from what its manifest recorded:
    merging it would silently make a corrupt dataset."""
    import yaml

    try:
        manifest = json.loads((part / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"merge: {part}/manifest.json: unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"merge: {part}/manifest.json: expected a JSON object")
    if manifest.get("shard") != [index, num_shards]:
        raise UserError(
            f"merge: {part}: manifest.json says shard {manifest.get('shard')}, expected "
            f"[{index}, {num_shards}] (written as --shard {index}/{num_shards}?)"
        )
    try:
        recorded = yaml.safe_load((part / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(
            f"merge: {part}/config.yaml: cannot read the shard's config ({type(exc).__name__})"
        ) from None
    diffs = _config_differences(recorded, cfg)
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise UserError(
            f"merge: {part} was generated with a different config ({'; '.join(diffs[:3])}{more});"
            " merge with the shards' config or regenerate the shards"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise UserError(f"merge: {part}/manifest.json: expected a 'files' mapping")
    for rel, info in files.items():
        path = part / rel
        if not path.is_file():
            raise UserError(f"merge: {part}: {rel} is missing (listed in its manifest.json)")
        if not isinstance(info, dict) or sha256_file(path) != info.get("sha256"):
            raise UserError(
                f"merge: {part}: {rel} does not match the sha256 its manifest.json records "
                "(truncated or edited since it was written; regenerate this shard)"
            )


def with_num_samples(cfg: GenerateConfig, n: int) -> GenerateConfig:
    """``--num-samples N``: every split gets N samples (quick dry runs)."""
    if n < 1:
        raise UserError(f"--num-samples: expected a positive integer, got {n}")
    return dataclasses.replace(cfg, num_train=n, num_eval=n)
