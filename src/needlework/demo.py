"""`needlework demo` (what `make demo` runs): the tiny recipe end to end on CPU, then a summary.

It builds a tiny random Llama, generates a small synthetic dictionary task, evaluates the model,
finetunes it with answer-only loss, evaluates again and writes the report. The summary prints the
before/after numbers as measured: on 2 CPU cores a model this small learns the answer *format*
and its answer-token loss falls, but it does not learn to retrieve (README, "What the demo shows").

Run:  needlework demo --out demo_out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from needlework.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "tiny_cpu.yaml"
ORACLE = "nq-open-oracle.jsonl.gz"
KV_METRICS = ("format_match", "value_correct", "dict_correct", "both_correct")


def _mdqa_source() -> list[str]:
    """Point MDQA at a local oracle file when one exists, else let it download (online only)."""
    for folder in (Path("data/lost-in-the-middle"), ROOT.parent / "shared/data/lost-in-the-middle"):
        if (folder / ORACLE).is_file():
            return [f'eval_overrides=["benchmarks.2.data_path={folder}"]']
    return []


def _metrics(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"


def summary(out: Path) -> str:
    """Before/after table of the held-out synthetic task, the loss, and where the report is."""
    before = _metrics(out / "eval" / "base" / "kv_retrieval" / "metrics.json")
    after = _metrics(out / "eval" / "ft_template" / "seed0" / "kv_retrieval" / "metrics.json")
    n = after.get("n", before.get("n", 0))
    lines = [
        f"Held-out synthetic KV samples (n={n}), mean [95% CI]:",
        f"  {'metric':<14} {'before':<24} {'after':<24}",
    ]
    for name in KV_METRICS:
        lines.append(
            f"  {name:<14} {_fmt(before.get('metrics', {}).get(name)):<24} "
            f"{_fmt(after.get('metrics', {}).get(name)):<24}"
        )
    log = out / "train" / "ft_template" / "seed0" / "train_log.jsonl"
    if log.is_file():
        losses = [r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
        if losses:
            lines.append(
                f"Answer-token training loss: {losses[0]:.3f} (first log) -> "
                f"{losses[-1]:.3f} (last log), {len(losses)} logs"
            )
    lines.append(
        f"Report: {out / 'report' / 'report.md'} (figures in {out / 'report' / 'figures'})"
    )
    return "\n".join(lines)


def run_demo(out_dir: str | Path) -> Path:
    """Run the tiny recipe into ``out_dir`` (resumable) and return the experiment folder."""
    from needlework.experiment import run_recipe

    if not RECIPE.is_file():
        raise UserError(f"{RECIPE}: the demo recipe is missing (run from a needlework checkout)")
    return run_recipe(RECIPE, [f"out_dir={Path(out_dir).resolve()}", *_mdqa_source()])


def demo_cmd(args: argparse.Namespace) -> int:
    out = run_demo(args.out)
    print(summary(out))
    return 0
