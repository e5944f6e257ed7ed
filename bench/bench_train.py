"""Training throughput of the tiny CPU config with padding, padding-free batches, and packing.

Run:  .venv/bin/python bench/bench_train.py [--rows 512] [--epochs 1] [--device cpu|cuda]

Trains ``configs/train/hf_tiny_cpu.yaml`` (tiny random Llama, char tokenizer) for the same number
of epochs over the same variable-length KV chats (1-8 dictionaries, so row lengths vary about 5x)
in each mode and reports *real* tokens per second: the tokens of the rows themselves, padding not
counted, so the modes are compared on the same work. Prints a markdown table. CPU timings are
noisy when other processes share the cores; repeat and report them as provisional.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train" / "hf_tiny_cpu.yaml"
MODES = {
    "padded (default)": [],
    "padding_free": ["trainer.padding_free=true"],
    "packing (bfd)": ["trainer.packing=true"],
}


def kv_chats(n: int, seed: int) -> list[dict]:
    """Chats of 1-8 dictionaries of 2-3 pairs each: lengths from about 40 to 300 tokens."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        dicts = [
            [(rng.randint(10, 99), rng.randint(100, 999)) for _ in range(rng.randint(2, 3))]
            for _ in range(rng.randint(1, 8))
        ]
        key, value = rng.choice(rng.choice(dicts))
        text = "\n".join("{" + ", ".join(f"{k}: {v}" for k, v in d) + "}" for d in dicts)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"{text}\nWhat is the value of {key}?"},
                    {"role": "assistant", "content": str(value)},
                ]
            }
        )
    return rows


def run_mode(name: str, overrides: list[str], data: Path, work: Path, epochs: float) -> dict:
    from needlework.config import load_config
    from needlework.training.config import TrainConfig
    from needlework.training.data import read_chat_rows
    from needlework.training.sft_run import prepare

    out = work / name.split()[0]
    cfg = load_config(
        TrainConfig,
        CONFIG,
        [
            f"train_path={data}",
            f"out_dir={out}",
            "trainer.max_steps=-1",
            f"trainer.epochs={epochs}",
            "trainer.logging_steps=1000",
            "trainer.save_steps=100000",
            "trainer.trl_overrides.disable_tqdm=true",
            *overrides,
        ],
    )
    rows = read_chat_rows(data)
    prep = prepare(cfg.trainer, cfg, out, rows)
    start = time.perf_counter()
    result = prep.trainer.train()
    seconds = time.perf_counter() - start
    real = sum(i.length for i in prep.infos) * epochs
    return {
        "mode": name,
        "steps": result.global_step,
        "rows": len(rows),
        "real_tokens": int(real),
        "seconds": seconds,
        "tokens_per_s": real / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()

    import torch

    if args.device == "cpu":
        torch.cuda.is_available = lambda: False  # measure the CPU path even on a GPU machine
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        data = work / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in kv_chats(args.rows, args.seed)))
        warm = work / "warmup.jsonl"  # first-call costs (imports, allocator) stay out of the table
        warm.write_text("".join(json.dumps(r) + "\n" for r in kv_chats(32, args.seed + 1)))
        run_mode("warmup", [], warm, work, 1.0)
        results = [run_mode(name, over, data, work, args.epochs) for name, over in MODES.items()]
    base = results[0]["tokens_per_s"]
    device = (
        torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads"
    )
    print(
        f"\nTraining throughput, {CONFIG.relative_to(ROOT)} ({args.rows} rows, "
        f"{args.epochs:g} epoch(s), {device}; torch {torch.__version__})\n"
    )
    print("| mode | optimizer steps | real tokens | seconds | real tokens/s | vs padded |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['mode']} | {r['steps']} | {r['real_tokens']} | {r['seconds']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f}x |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
