"""Handlers of ``needlework generate`` and ``needlework inspect`` (arguments live in cli.py)."""

from __future__ import annotations

import argparse
import sys


def generate_cmd(args: argparse.Namespace) -> int:
    from needlework.config import (
        PositiveInt,
        config_kind,
        dry_run_done,
        load_config,
        read_yaml,
        validate,
    )
    from needlework.datagen.pipeline import GenerateConfig, generate

    data = read_yaml(args.config)
    rows = config_kind(data) == "padded_reasoning"  # evaluation rows, not a training set
    overrides = list(args.overrides)
    if args.num_samples is not None:  # quick runs: N samples per split (N problems per task)
        n: int = validate(PositiveInt, args.num_samples, source="--num-samples")
        overrides += [
            f"{key}={n}" for key in (["num_problems"] if rows else ["num_train", "num_eval"])
        ]
    if rows:
        return padded_reasoning_cmd(args, data, overrides)
    cfg = load_config(GenerateConfig, args.config, overrides, data=data)
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


def padded_reasoning_cmd(args: argparse.Namespace, data: dict, overrides: list[str]) -> int:
    """FLenQA-style evaluation rows (datagen/padded_reasoning.py), written in one go."""
    from needlework.config import dry_run_done, load_config
    from needlework.datagen.padded_reasoning import PaddedReasoning, generate

    cfg = load_config(PaddedReasoning, args.config, overrides, data=data)
    if dry_run_done("generate", args):
        return 0
    manifest = generate(cfg, progress=not args.no_progress)
    for line in manifest["skipped"]:
        print(f"needlework generate: {line}", file=sys.stderr)
    sizes = ", ".join(f"{n}: {s['min']}-{s['max']}" for n, s in manifest["mixin_tokens"].items())
    print(f"{manifest['rows']} rows; mixin tokens {sizes}", file=sys.stderr)
    print(cfg.out_dir)
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
