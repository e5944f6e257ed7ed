"""``needlework train --config FILE [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse


def train_cmd(args: argparse.Namespace) -> int:
    from needlework.config import dry_run_done, load_config
    from needlework.training.api import train
    from needlework.training.config import TrainConfig
    from needlework.training.runfiles import MODEL_JSON, is_main_process

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if dry_run_done("train", args):
        return 0
    run_dir = train(cfg, resume=bool(getattr(args, "resume", False)))
    if is_main_process():
        print(f"needlework train: done; load the result with {run_dir / MODEL_JSON}")
    return 0
