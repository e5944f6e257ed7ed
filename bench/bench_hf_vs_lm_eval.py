"""needlework's ``hf`` backend vs lm-evaluation-harness's HF model on the same prompts.

Run:  .venv/bin/python bench/bench_hf_vs_lm_eval.py [--samples 24] [--max-new 32]

Both get the same chat-templated KV prompts (SmolLM2-135M-Instruct, bundled GGUF, float32,
greedy, batch 8) and must produce the same text; the table gives each one's wall time for the
generation alone (models loaded beforehand) and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--max-new", type=int, default=32)
    args = p.parse_args()

    from needlework.config import load_config
    from needlework.datagen.pipeline import GenerateConfig, generate
    from needlework.io import read_jsonl
    from needlework.models import load_backend
    from needlework.models.gguf import cached_import
    from needlework.runtime import configure_threads

    configure_threads()
    out = Path(tempfile.mkdtemp(prefix="nw_bench_lm_eval_"))
    cfg = load_config(
        GenerateConfig,
        ROOT / "configs/datagen/smollm2_kv_demo.yaml",
        [f"out_dir={out}", f"num_eval={args.samples}", "num_train=1"],
    )
    generate(cfg, progress=False)
    convs = [r["messages"][:1] for r in read_jsonl(out / "seed0" / "eval.jsonl")]
    folder = str(cached_import("smollm2-135m-instruct"))

    ours = load_backend({"name": "hf", "path": folder, "dtype": "float32", "batch_size": 8})
    ours.generate(convs[:1], max_new_tokens=2)  # load outside the timing
    t = time.perf_counter()
    a = ours.generate(convs, max_new_tokens=args.max_new)
    t_ours = time.perf_counter() - t

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=folder, dtype="float32", batch_size=8, device="cpu")
    tok = lm.tokenizer
    contexts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    gen = {"until": ["<|im_end|>"], "max_gen_toks": args.max_new, "do_sample": False}
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=(c, dict(gen)), idx=i)
        for i, c in enumerate(contexts)
    ]
    t = time.perf_counter()
    b = lm.generate_until(requests, disable_tqdm=True)
    t_lm = time.perf_counter() - t

    same = sum(x.strip() == y.strip() for x, y in zip(a, b))
    print("| backend | seconds | samples/s |\n|---|---|---|")
    print(f"| needlework hf | {t_ours:.1f} | {len(convs) / t_ours:.2f} |")
    print(f"| lm-eval HFLM | {t_lm:.1f} | {len(convs) / t_lm:.2f} |")
    print(f"\nratio lm-eval / needlework: {t_lm / t_ours:.2f}x; same text: {same}/{len(convs)}")
    for x, y in zip(a, b):
        if x.strip() != y.strip():
            print(f"  differs: {x!r} vs {y!r}")
            break
    return 0 if same == len(convs) else 1


if __name__ == "__main__":
    sys.exit(main())
