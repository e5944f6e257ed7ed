"""SmolLM2-135M-Instruct on this CPU: bf16 vs float32 (training tokens/s, eval samples/s) and
1 vs 2 data-parallel eval workers, in one run.

Run:  .venv/bin/python bench/bench_smollm2.py [--samples 48] [--steps 6]

Everything goes through needlework's own commands (generate, train, eval, eval --workers 2) on
the bundled GGUF, so the numbers are what a user gets. Each measurement runs alone, one after
the other; timings include model loading (printed separately where it matters).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NW = [sys.executable, "-m", "needlework"]


def sh(*args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([*NW, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"failed: needlework {' '.join(args)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


FORWARD = """
import sys, time, torch
threads, dtype, length = int(sys.argv[1]), getattr(torch, sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM
from needlework.models.gguf import cached_import
folder = str(cached_import("smollm2-135m-instruct"))
model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
x = torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(x)
    t = time.perf_counter(); model(x); model(x); fwd = (time.perf_counter() - t) / 2
t = time.perf_counter()
for _ in range(2):
    model(x, labels=x).loss.backward()
print(f"{fwd:.2f} {(time.perf_counter() - t) / 2:.2f}")
"""


def forward_times(threads: int, dtype: str, length: int) -> tuple[str, str]:
    """One sequence's forward and forward+backward seconds (full model), in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", FORWARD, str(threads), dtype, str(length)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    fwd, both = proc.stdout.split()[-2:]
    return fwd, both


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=48, help="held-out KV samples per eval")
    p.add_argument("--steps", type=int, default=6, help="LoRA steps per training run")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nw_bench_smollm2_"))
    data = tmp / "data"
    sh(
        "generate",
        "--config",
        "configs/datagen/smollm2_kv_demo.yaml",
        f"out_dir={data}",
        f"num_eval={args.samples}",
        "--no-progress",
    )
    eval_file = data / "seed0" / "eval.jsonl"
    rows = []
    for length in (256, 1024):
        for threads in (1, 2):
            for dtype in ("float32", "bfloat16"):
                fwd, both = forward_times(threads, dtype, length)
                rows.append(
                    (
                        f"{length} tokens, {dtype}, {threads} thread(s)",
                        f"forward {fwd} s / forward+backward {both} s",
                        "-",
                    )
                )

    # -- training: tokens/s from train_log (TRL's own runtime, model load excluded)
    for dtype, flag in (("float32", "false"), ("bfloat16", "true")):
        out = tmp / f"train_{dtype}"
        wall = sh(
            "train",
            "--config",
            "configs/train/hf_smollm2_lora_cpu.yaml",
            f"train_path={data / 'seed0' / 'train.jsonl'}",
            f"out_dir={out}",
            f"trainer.max_steps={args.steps}",
            f"trainer.bf16={flag}",
            "trainer.save_steps=1000",
        )
        log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        runtime = next(r["train_runtime"] for r in log if "train_runtime" in r)
        tokens = max(r.get("num_tokens", 0) for r in log)
        rows.append(
            (f"LoRA train, {dtype}", f"{tokens / runtime:.0f} tokens/s", f"{wall:.0f} s wall")
        )

    # -- evaluation: samples/s on the held-out KV split, the base model
    def evaluate(dtype: str, workers: int) -> float:
        out = tmp / f"eval_{dtype}_{workers}"
        extra = ["--workers", str(workers)] if workers > 1 else []
        return sh(
            "eval",
            "--model",
            "hf:smollm2-135m-instruct",
            "--benchmark",
            "kv_retrieval",
            "--out",
            str(out),
            f"benchmarks.kv_retrieval.data_path={eval_file}",
            f"model.dtype={dtype}",
            *extra,
        )

    for dtype in ("float32", "bfloat16"):
        wall = evaluate(dtype, 1)
        rows.append(
            (
                f"eval KV, {dtype}, 1 process",
                f"{args.samples / wall:.2f} samples/s",
                f"{wall:.0f} s wall",
            )
        )
    best = "float32"
    for workers in (1, 2):
        wall = evaluate(best, workers) if workers > 1 else None
        if wall is None:
            continue
        rows.append(
            (
                f"eval KV, {best}, {workers} workers",
                f"{args.samples / wall:.2f} samples/s",
                f"{wall:.0f} s wall",
            )
        )
    one = (tmp / "eval_float32_1" / "kv_retrieval" / "predictions.jsonl").read_bytes()
    two = (tmp / "eval_float32_2" / "kv_retrieval" / "predictions.jsonl").read_bytes()
    print("| measurement | rate | wall (incl. model load) |\n|---|---|---|")
    for name, rate, wall_s in rows:
        print(f"| {name} | {rate} | {wall_s} |")
    print(f"\n2-worker predictions.jsonl byte-identical to 1 process: {one == two}")
    print(f"(scratch folder: {tmp})")
    return 0 if one == two else 1


if __name__ == "__main__":
    raise SystemExit(main())
