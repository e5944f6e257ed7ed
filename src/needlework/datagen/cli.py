"""Handlers of ``needlework generate`` and ``needlework inspect`` (arguments live in cli.py)."""

from __future__ import annotations

import argparse
import sys


def generate_cmd(args: argparse.Namespace) -> int:
    from needlework.config import PositiveInt, dry_run_done, load_config, validate
    from needlework.datagen.pipeline import GenerateConfig, generate

    overrides = list(args.overrides)
    if args.num_samples is not None:  # every split gets N samples (quick dry runs)
        n: int = validate(PositiveInt, args.num_samples, source="--num-samples")
        overrides += [f"num_train={n}", f"num_eval={n}"]
    cfg = load_config(GenerateConfig, args.config, overrides)
    if dry_run_done("generate", args):
        return 0
    manifest = generate(cfg, progress=not args.no_progress)
    for seed, info in manifest["seeds"].items():
        parts = ", ".join(
            f"{split} {s['n']} (prompt tokens {s['prompt_tokens']['min']}-"
            f"{s['prompt_tokens']['max']})"
            if s["n"]
            else f"{split} 0"
            for split, s in info["splits"].items()
        )
        unit = cfg.generator.unit
        match = info.get("token_match")
        matched = (
            f" (training {match['count']} tokens {match['reached_tokens']} for a target of "
            f"{match['target_tokens']})"
            if match
            else ""
        )
        print(f"seed {seed}: {info[f'num_{unit}']} {unit}; {parts}{matched}", file=sys.stderr)
    print(manifest["out_dir"])
    return 0


def inspect_cmd(args: argparse.Namespace) -> int:
    import os

    from needlework.datagen.summary import format_summary, inspect_data

    text = format_summary(inspect_data(args.data))
    try:
        print(text)
    except BrokenPipeError:  # `needlework inspect DIR | head` is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
