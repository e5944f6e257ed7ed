"""Generation speed of the paper's dataset vs. the floor of tokenizing each prompt once.

Run:  .venv/bin/python bench/bench_generate.py [--samples 2000]

Paper configuration: simple_dict_kv, 85 dictionaries, 4096-token budget, answer template,
Mistral v1 SentencePiece tokenizer, exact token counts (prompt and conversation) in every row.
Measured in one run on pinned cores:

* floor: ``sentencepiece.encode`` of every final prompt once (the least any exact-count
  generator must do);
* rows: ``iter_rows`` — sampling, budget check and exact counts, in memory (every count is
  checked against the floor's real encode);
* generate(): the full library call writing canonical + TRL JSONL (no HF/parquet).

Targets (issue #2): rows >= 1000 samples/s on one core and >= 1/3 of the floor's throughput.
Timings on a shared machine are provisional.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "datagen" / "simple_dict_kv_mistral_v1_wtemplate.yaml"


# The cores we may use, read before anything is pinned.
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _pin(core: int) -> None:
    if CORES:
        os.sched_setaffinity(0, {CORES[core % len(CORES)]})


def _config(n: int, out: Path):
    from needlework.config import load_config
    from needlework.datagen.pipeline import GenerateConfig

    cfg = load_config(GenerateConfig, CONFIG)
    return dataclasses.replace(
        cfg, seeds=(0,), num_train=n, num_eval=0, formats=("trl",), out_dir=out
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args(argv)
    from needlework.datagen.pipeline import generate, iter_rows
    from needlework.tokenization import load_counter

    _pin(0)
    n = args.samples
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(n, Path(tmp) / "ds")
        counter = load_counter(cfg.tokenizer)
        list(iter_rows(cfg, counter, 0, "train", 85, range(20)))  # warm-up
        t = time.perf_counter()
        rows = list(iter_rows(cfg, counter, 0, "train", 85, range(n)))
        t_rows = time.perf_counter() - t
        prompts = [r["messages"][0]["content"] for r in rows]
        sp = counter._sp  # the same SentencePiece model, encoded directly
        t = time.perf_counter()
        counts = [len(sp.encode(p)) for p in prompts]
        t_floor = time.perf_counter() - t
        assert counts == [r["meta"]["prompt_tokens"] for r in rows], "counts differ"
        total = sum(counts)
        t = time.perf_counter()
        generate(_config(n, Path(tmp) / "one"), progress=False)
        t_gen1 = time.perf_counter() - t

    floor, rate = n / t_floor, n / t_rows
    print(
        f"paper config: {n} samples, 85 dictionaries, 4096 tokens, mistral:v1, "
        f"{total / n:.0f} prompt tokens on average; {len(CORES) or os.cpu_count()} usable cores\n"
    )
    print("| measurement | seconds | samples/s | vs floor |")
    print("|---|---:|---:|---:|")
    print(f"| floor: encode each final prompt once (1 core) | {t_floor:.2f} | {floor:.0f} | 1.00 |")
    print(
        f"| rows with exact counts, in memory (1 core) | {t_rows:.2f} | {rate:.0f} | "
        f"{rate / floor:.2f} |"
    )
    print(
        f"| generate() to JSONL, 1 process | {t_gen1:.2f} | {n / t_gen1:.0f} | "
        f"{n / t_gen1 / floor:.2f} |"
    )
    ok_abs, ok_rel = rate >= 1000, rate >= floor / 3
    print(
        f"target >= 1000 samples/s on one core: {'PASS' if ok_abs else 'FAIL'}; "
        f">= 1/3 of the floor: {'PASS' if ok_rel else 'FAIL'}"
    )
    return 0 if (ok_abs and ok_rel) else 1


if __name__ == "__main__":
    raise SystemExit(main())
