"""Handlers of ``needlework generate`` and ``needlework inspect`` (arguments live in cli.py)."""

from __future__ import annotations

import argparse
import sys


def generate_cmd(args: argparse.Namespace) -> int:
    from needlework.config import config_kind, dry_run_done, load_config, read_yaml
    from needlework.datagen.pipeline import (
        GenerateConfig,
        check_num_shards,
        generate,
        merge_shards,
        parse_shard,
        with_num_samples,
    )
    from needlework.errors import UserError

    if args.merge is not None:
        # --merge N rebuilds the whole dataset from N shards; --shard writes one of them
        if args.shard:
            raise UserError(
                "--merge: cannot be combined with --shard (write each shard with --shard I/N, "
                "then combine them with --merge N alone)"
            )
        check_num_shards(args.merge)
    data = read_yaml(args.config)
    if config_kind(data) == "padded_reasoning":
        return padded_reasoning_cmd(args, data)
    shard = parse_shard(args.shard) if args.shard else None
    cfg = load_config(GenerateConfig, args.config, args.overrides, data=data)
    if args.num_samples is not None:
        cfg = with_num_samples(cfg, args.num_samples)
    if dry_run_done("generate", args):
        return 0
    if args.merge is not None:
        manifest = merge_shards(cfg, args.merge, progress=not args.no_progress)
    else:
        manifest = generate(cfg, shard=shard, progress=not args.no_progress)
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


def padded_reasoning_cmd(args: argparse.Namespace, data: dict) -> int:
    """FLenQA-style evaluation rows (datagen/padded_reasoning.py), written in one go."""
    from needlework.config import dry_run_done, load_config
    from needlework.datagen.padded_reasoning import PaddedReasoning, generate, with_num_problems
    from needlework.errors import UserError

    if args.shard or args.merge is not None:
        raise UserError("--shard/--merge: a padded_reasoning config is written in one go")
    cfg = load_config(PaddedReasoning, args.config, args.overrides, data=data)
    if args.num_samples is not None:
        cfg = with_num_problems(cfg, args.num_samples)
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
