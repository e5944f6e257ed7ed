"""``needlework eval``: a config file, or the short form ``--model hf:PATH --benchmark mdqa``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from needlework.errors import ConfigError, UserError


def build_eval_config(args: argparse.Namespace) -> Any:
    """EvalConfig from ``--config`` plus the short-form flags plus ``key=value`` overrides.

    Flags replace the matching config keys: ``--model`` the model, ``--benchmark``/``--suite``
    the benchmark list, ``--limit`` and ``--out`` the limit and output folder, ``--gold-answers``
    the oracle run.
    """
    from needlework.config import load_config, read_yaml
    from needlework.evaluation.runner import EvalConfig
    from needlework.models import parse_model_spec

    data: dict[str, Any] = read_yaml(args.config) if args.config else {}
    if isinstance(data.get("model"), str) and ":" in data["model"]:
        data["model"] = parse_model_spec(data["model"])  # short form inside a YAML file
    if getattr(args, "model", None):
        data["model"] = parse_model_spec(args.model)
    names = list(getattr(args, "benchmark", None) or [])
    if getattr(args, "suite", None):
        names.append(args.suite)
    if names:
        data["benchmarks"] = names
    if getattr(args, "limit", None) is not None:
        data["limit"] = args.limit
    if getattr(args, "out", None):
        data["out_dir"] = args.out
    if getattr(args, "gold_answers", False):
        data["gold_answers"] = True
    return load_config(EvalConfig, args.config, args.overrides or (), data=data)


def eval_cmd(args: argparse.Namespace) -> int:
    """Run the evaluation, then print one summary line per benchmark and its run folder.

    With ``--workers N`` this process checks the config, then starts N workers (:mod:`parallel`)
    and says the first worker's error once."""
    from needlework.config import dry_run_done
    from needlework.evaluation import parallel
    from needlework.evaluation.runner import default_out_dir, evaluate, is_suite

    workers = args.workers or 1
    if workers < 1:
        raise ConfigError(f"--workers: expected >= 1, got {workers}")
    cfg = build_eval_config(args)  # checked here, before any worker starts
    suites = [b.label() for b in cfg.benchmarks if is_suite(b)]
    if suites and max(workers, parallel.current().world) > 1:
        raise ConfigError(
            f"{suites[0]}: lm-eval runs a suite in one process; evaluate it without --workers "
            "or a launcher (the other benchmarks may be split)"
        )
    if dry_run_done("eval", args):
        return 0
    if workers > 1 and "WORLD_SIZE" not in os.environ:
        argv = sys.argv[1:] if args.argv is None else list(args.argv)
        if cfg.out_dir is None:  # every worker must write into the same folder
            argv += ["--out", str(default_out_dir(cfg))]
        return parallel.launch(argv, workers)
    try:
        run_dirs = evaluate(cfg, progress=True)
    except UserError as exc:
        if parallel.report_failure(exc):  # a worker: its launcher says it, once
            return exc.exit_code
        raise
    except KeyboardInterrupt:
        if os.environ.get(parallel.ERRORS):  # a worker stopped by its launcher: it speaks
            return 130
        raise
    if not parallel.current().is_main:
        return 0
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        print(f"{run_dir.name}: {summary_line(metrics)}  -> {run_dir}")
    return 0


def summary_line(metrics: dict[str, Any]) -> str:
    """``best_subspan_em 0.532 [0.504, 0.560] n=1200`` for the primary metric (or the first)."""
    scores = metrics.get("metrics") or {}  # written by this run: trusted
    name = metrics.get("primary_metric") if metrics.get("primary_metric") in scores else None
    stat = scores.get(name) or next(iter(scores.values()), None)
    if stat is None:
        return "done (no summary metric)"
    name = name or next(iter(scores))
    skipped = metrics.get("n_skipped") or 0
    return (
        f"{name} {stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}] "
        f"n={stat['n']}" + (f" ({skipped} skipped)" if skipped else "")
    )
