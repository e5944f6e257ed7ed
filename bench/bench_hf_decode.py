"""Does the ``hf`` backend's hand-written decoding pay on a real model? SmolLM2-135M-Instruct on
real MDQA prompts: the lean loop (``fast_prefill: true``: per-prompt prefill into one cache, then
batched greedy steps over ``model.forward``, ``models/hf_decode.py``) vs plain batched
``model.generate`` on a left-padded batch (``fast_prefill: false``) vs one prompt at a time.

Run:  .venv/bin/python bench/bench_hf_decode.py [--samples 16] [--batch-size 8] [--docs 10]

Issue #9 asks to keep a hand-written loop only if a benchmark on a real model shows it pays;
this prints samples/s per layout and checks that every layout gives the same greedy text.
Prompts: MDQA from $NEEDLEWORK_DATA/lost-in-the-middle (or data/), else the KV task generated
here. One thread (the project's default on a 2-core machine); best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def prompts(n: int, docs: int) -> tuple[str, list]:
    from needlework.evaluation.benchmarks.mdqa import MDQA

    root = Path(os.environ.get("NEEDLEWORK_DATA", "data")) / "lost-in-the-middle"
    if root.is_dir():
        bench = MDQA(data_path=str(root), num_docs=docs, gold_positions=(0,), num_questions=n)
        return f"MDQA {docs} docs", [s.messages for s in bench.samples()][:n]
    import random

    from needlework.datagen.simple_dict_kv import SimpleDictKV

    gen = SimpleDictKV(num_dicts=40)
    rng = random.Random(0)
    tasks = [gen.build(rng, 40, rng.randrange(40)) for _ in range(n)]
    return "KV 40 dicts", [({"role": "user", "content": t.prompt},) for t in tasks]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--docs", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    os.environ.setdefault("NEEDLEWORK_THREADS", "1")
    from needlework.models import load_backend
    from needlework.runtime import configure_threads

    configure_threads()
    kind, convs = prompts(args.samples, args.docs)
    layouts = {
        "lean loop (fast_prefill: true)": {"fast_prefill": True, "batch_size": args.batch_size},
        "generate, left-padded batch": {"fast_prefill": False, "batch_size": args.batch_size},
        "generate, one at a time": {"fast_prefill": False, "batch_size": 1},
    }
    results, outputs = {}, {}
    for name, fields in layouts.items():
        spec = {"name": "hf", "path": "smollm2-135m-instruct", "dtype": "fastest", **fields}
        model = load_backend(spec)
        model.generate(convs[:2], max_new_tokens=4)  # load and warm up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[name] = model.generate(convs, max_new_tokens=args.new_tokens)
            best = min(best, time.perf_counter() - start)
        results[name] = len(convs) / best
        print(f"{name:34s} {results[name]:.3f} samples/s", flush=True)
    first = next(iter(outputs.values()))
    same = {name: sum(a == b for a, b in zip(out, first)) for name, out in outputs.items()}
    lean, padded = results[next(iter(layouts))], results["generate, left-padded batch"]
    print(
        f"\n{kind}, {len(convs)} prompts, {args.new_tokens} new tokens, batch {args.batch_size}, "
        f"1 thread: lean loop / plain batched generate = {lean / padded:.2f}x; identical outputs "
        f"vs the lean loop: {same}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
