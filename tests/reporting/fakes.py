"""Synthetic run folders in the records.py format, with known per-sample scores.

Scores are drawn from ``random.Random`` with an accuracy that depends on the model and on the
sample's position/length, so the report has shapes to draw; the tests recompute every expected
number from the rows written here, never from the report's own code.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from needlework.evaluation.base import report_declaration
from needlework.registry import benchmarks
from needlework.stats import mean_ci

Row = dict[str, Any]


def stat(values: list[float]) -> dict[str, Any]:
    mean, lo, hi = mean_ci(values)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": len(values)}


def write_run(
    folder: Path,
    *,
    benchmark: str,
    model: str,
    rows: list[Row],
    primary: str,
    group_by: tuple[str, ...] = (),
    variant: str | None = None,
    seed: int | None = None,
    metrics: bool = True,
    predictions: bool = True,
    extra: dict[str, Any] | None = None,
    unit: dict[str, Any] | None = None,
) -> Path:
    """Write config.yaml, run.json, predictions.jsonl and metrics.json like the runner does.

    The report declaration (``figures``, ``report_rank``, ``secondary_metrics``) comes from the
    registered benchmark built with ``unit`` as its config, as the runner records it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(f"model: {model}\nbenchmarks:\n- name: {benchmark}\n")
    info: dict[str, Any] = {"needlework_version": "0.1.0", "model": model, "benchmark": benchmark}
    if variant is not None:
        info["variant"] = variant
    if seed is not None:
        info["seed"] = seed
    (folder / "run.json").write_text(json.dumps(info))
    if predictions:
        with (folder / "predictions.jsonl").open("w") as fh:
            for row in rows:
                fh.write(json.dumps({"benchmark": benchmark, **row}) + "\n")
    if metrics:
        names = list(dict.fromkeys(k for r in rows for k in r["scores"]))
        out: dict[str, Any] = {
            "benchmark": benchmark,
            "model": model,
            "n": len(rows),
            "primary_metric": primary,
            "label": folder.name if folder.name.startswith(benchmark) else benchmark,
            "metrics": {m: stat([r["scores"][m] for r in rows if m in r["scores"]]) for m in names},
            "by": {},
        }
        for field in group_by:
            groups: dict[str, list[Row]] = {}
            for r in rows:
                groups.setdefault(str(r["meta"][field]), []).append(r)
            out["by"][field] = {
                k: {
                    m: stat([r["scores"][m] for r in g])
                    for m in names
                    if all(m in r["scores"] for r in g)
                }
                for k, g in groups.items()
            }
        declared = benchmarks.get(benchmark)(**(unit or {}))
        out["secondary_metrics"] = list(declared.secondary_metrics)
        out.update(report_declaration(declared))
        out.update(extra or {})
        (folder / "metrics.json").write_text(json.dumps(out, indent=1))
    return folder


def _row(sample_id: str, ok: bool, metric: str, meta: Row, prompt: str = "") -> Row:
    return {
        "id": sample_id,
        "prompt_sha256": hashlib.sha256((prompt or sample_id).encode()).hexdigest(),
        "messages": [{"role": "user", "content": prompt or f"Question for {sample_id}?"}],
        "output": "the answer" if ok else "something else",
        "scores": {metric: 1.0 if ok else 0.0},
        "meta": meta,
    }


# Accuracy profiles: the base model is U-shaped/length-sensitive, the finetuned one flatter.
def acc_base(depth: float) -> float:
    return 0.75 - 0.5 * (1 - abs(2 * depth - 1))


def acc_ft(depth: float) -> float:
    return 0.7 - 0.1 * (1 - abs(2 * depth - 1))


def mdqa_rows(
    rng: random.Random,
    acc: Callable[[float], float],
    per_pos: int = 40,
    positions: tuple[int, ...] = (0, 4, 9, 14, 19),
) -> list[Row]:
    rows = []
    for p in positions:
        for i in range(per_pos):
            meta = {"gold_position": p, "num_docs": 20}
            rows.append(_row(f"mdqa-{p}-{i}", rng.random() < acc(p / 19), "best_subspan_em", meta))
    return rows


def flenqa_rows(rng: random.Random, acc: Callable[[float], float], per_len: int = 20) -> list[Row]:
    rows = []
    for size in (250, 500, 1000, 2000, 3000):
        for i in range(per_len):
            meta = {
                "ctx_size": size,
                "dataset": ("PIR", "MonoRel")[i % 2],
                "dispersion": ("first", "last")[i % 2],
            }
            rows.append(
                _row(f"flenqa-{size}-{i}", rng.random() < acc(size / 6000), "correct", meta)
            )
    return rows


def kv_rows(
    rng: random.Random,
    acc: Callable[[float], float],
    n: int = 170,
    format_rate: float | None = None,
) -> list[Row]:
    """KV samples scored ``value_correct``; with ``format_rate`` also ``format_match`` (the
    answer followed the template) at that rate, as the kv_retrieval benchmark records it."""
    rows = []
    for i in range(n):
        pos = i % 85
        # as the kv_retrieval benchmark keeps them: lower edge of a 10% depth bin
        meta = {
            "gold_position": pos,
            "num_dicts": 85,
            "gold_depth_bin": min(pos * 10 // 84, 9) / 10,
        }
        row = _row(f"kv-{i}", rng.random() < acc(pos / 84), "value_correct", meta)
        if format_rate is not None:
            row["scores"]["format_match"] = 1.0 if rng.random() < format_rate else 0.0
        rows.append(row)
    return rows


def niah_rows(rng: random.Random, acc: Callable[[float], float], per_cell: int = 4) -> list[Row]:
    rows = []
    for length in (1000, 2000, 4000):
        for depth in (0, 50, 100):
            for i in range(per_cell):
                meta = {"context_length": length, "depth_percent": depth}
                rows.append(
                    _row(
                        f"niah-{length}-{depth}-{i}",
                        rng.random() < acc(depth / 100) - length / 40000,
                        "exact_match",
                        meta,
                    )
                )
    return rows


def general_rows(rng: random.Random, p: float) -> list[Row]:
    rows = []
    for task, metric, n in (("mmlu", "mmlu/acc", 60), ("gsm8k", "gsm8k/exact_match", 40)):
        for i in range(n):
            row = _row(f"{task}-{i}", rng.random() < p, metric, {"task": task})
            rows.append(row)
    return rows


def experiment(root: Path, *, seeds: tuple[int, ...] = (0, 1)) -> dict[str, dict[str, Path]]:
    """An experiment folder: base (one run) and ft_template (several seeds) on every benchmark.

    Returns {variant-and-seed: {label: run folder}}.
    """
    made: dict[str, dict[str, Path]] = {}
    plans = [("base", None, acc_base, 0.55)] + [("ft_template", s, acc_ft, 0.56) for s in seeds]
    for variant, seed, acc, p_general in plans:
        rng = random.Random(f"{variant}-{seed}")
        where = root / "eval" / variant / (f"seed{seed}" if seed is not None else "")
        model = f"hf:/models/{variant}" + (f"-seed{seed}" if seed is not None else "")
        common = {"model": model, "variant": variant, "seed": seed}
        runs = {
            "mdqa": write_run(
                where / "mdqa",
                benchmark="mdqa",
                rows=mdqa_rows(rng, acc),
                primary="best_subspan_em",
                group_by=("gold_position",),
                **common,
            ),
            "flenqa": write_run(
                where / "flenqa",
                benchmark="flenqa",
                rows=flenqa_rows(rng, acc),
                primary="correct",
                group_by=("ctx_size", "dataset", "dispersion"),
                **common,
            ),
            "flenqa_cot": write_run(
                where / "flenqa_cot",
                benchmark="flenqa",
                rows=flenqa_rows(rng, lambda d, acc=acc: acc(d) + 0.1),
                primary="correct",
                group_by=("ctx_size", "dataset"),
                unit={"cot": True},
                **common,
            ),
            "kv_retrieval": write_run(
                where / "kv_retrieval",
                benchmark="kv_retrieval",
                rows=kv_rows(rng, acc),
                primary="value_correct",
                group_by=("gold_position", "gold_depth_bin"),
                **common,
            ),
            "niah": write_run(
                where / "niah",
                benchmark="niah",
                rows=niah_rows(rng, acc),
                primary="exact_match",
                group_by=("context_length", "depth_percent"),
                **common,
            ),
            "general": write_run(
                where / "general",
                benchmark="general",
                rows=general_rows(rng, p_general),
                primary="mmlu/acc",
                group_by=("task",),
                extra={"label": "general", "caveats": {"gsm8k": "shots from the test split"}},
                **common,
            ),
        }
        made[variant + (f"-seed{seed}" if seed is not None else "")] = runs
    return made


def read_scores(folder: Path, metric: str) -> dict[str, float]:
    out = {}
    for line in (folder / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["id"]] = row["scores"][metric]
    return out
