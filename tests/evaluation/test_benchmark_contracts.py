"""The contract every registered long-context benchmark keeps (house style §4.8).

score(sample, gold answer) gives 1.0 on the primary metric, a wrong answer 0.0, samples() is
deterministic with unique ids and single user turns, metadata holds the group_by fields, and the
config survives a YAML round trip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from needlework.config import build_unit, dump_yaml
from needlework.registry import benchmarks

FIX = Path(__file__).resolve().parents[1] / "fixtures"

CONFIGS = {
    "mdqa": {
        "name": "mdqa",
        "data_path": str(FIX / "mdqa_oracle_tiny.jsonl.gz"),
        "num_docs": 4,
        "gold_positions": [0, 2, 3],
        "num_questions": 6,
    },
    "mdqa_bm25": {
        "name": "mdqa",
        "data_path": str(FIX / "mdqa_oracle_tiny.jsonl.gz"),
        "num_docs": 3,
        "gold_positions": [1],
        "distractors": "bm25",
    },
    "mdqa_files": {
        "name": "mdqa",
        "source": "files",
        "data_path": str(FIX / "mdqa_files"),
        "num_docs": 4,
        "gold_positions": [0, 3],
    },
    "mdqa_closedbook": {
        "name": "mdqa",
        "mode": "closedbook",
        "data_path": str(FIX / "mdqa_oracle_tiny.jsonl.gz"),
    },
    "mdqa_oracle": {
        "name": "mdqa",
        "mode": "oracle",
        "data_path": str(FIX / "mdqa_oracle_tiny.jsonl.gz"),
    },
    "flenqa": {"name": "flenqa", "data_path": str(FIX / "flenqa_tiny.jsonl")},
    "flenqa_cot": {"name": "flenqa", "data_path": str(FIX / "flenqa_tiny.jsonl"), "cot": True},
    "kv_retrieval": {"name": "kv_retrieval", "data_path": str(FIX / "kv_eval_tiny.jsonl")},
    "kv_retrieval_litm": {
        "name": "kv_retrieval",
        "source": "lost_in_the_middle",
        "data_path": str(FIX / "kv_litm_5_keys_tiny.jsonl"),
        "gold_positions": [0, 2, 4],
    },
    "niah": {
        "name": "niah",
        "tokenizer": "char",
        "context_lengths": [400, 800],
        "depth_percents": [0, 50, 100],
    },
}
WRONG = "I cannot say."


def test_every_registered_long_context_benchmark_is_covered():
    names = set(benchmarks.names()) - {"general"}  # the lm-eval suite runs through run_suite
    assert names == {c["name"] for c in CONFIGS.values()}


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def bench(request):
    return build_unit(benchmarks, CONFIGS[request.param], source=request.param)


def test_gold_scores_one_and_wrong_scores_zero(bench):
    samples = list(bench.samples())
    assert samples
    for s in samples:
        gold = bench.score(s, s.answers[0])
        assert gold[bench.primary_metric] == 1.0, (s.id, gold)
        assert bench.score(s, WRONG)[bench.primary_metric] == 0.0, s.id
        if bench.label().startswith("flenqa"):  # the opposite label is wrong too
            opposite = "False" if s.answers[0] == "True" else "True"
            assert bench.score(s, opposite)[bench.primary_metric] == 0.0
        assert all(isinstance(v, float) for v in gold.values())


def test_samples_are_deterministic_and_well_formed(bench):
    first, second = list(bench.samples()), list(bench.samples())
    assert first == second
    assert len({s.id for s in first}) == len(first)
    for s in first:
        assert len(s.messages) == 1 and s.messages[0]["role"] == "user"
        assert s.messages[0]["content"].strip() and s.answers
        assert set(bench.group_by) <= set(s.meta), (s.id, bench.group_by)
    assert (bench.max_new_tokens is None or bench.max_new_tokens >= 1) and bench.label().replace(
        "_", ""
    ).isalnum()


def test_config_round_trip(bench):
    data = yaml.safe_load(dump_yaml(bench))
    assert build_unit(benchmarks, data) == bench


def test_labels_are_distinct():
    labels = [build_unit(benchmarks, c).label() for c in CONFIGS.values()]
    assert len(set(labels)) == len(labels), labels


def test_what_a_benchmark_does_not_write_is_derived():
    """The narrow contract: samples, score, primary_metric and group_by; the rest defaults."""
    from needlework.config import config
    from needlework.evaluation.base import Benchmark

    @config
    class Grid(Benchmark):
        tag: str = ""
        tokenizer: str | None = None
        primary_metric = "acc"
        group_by = ("length", "depth")

    grid = Grid(tag="v2")
    assert grid.label() == "grid_v2" and Grid().label() == "grid"
    assert grid.needs_token_counter and grid.report_rank == 100
    assert grid.max_new_tokens is None and grid.secondary_metrics == ()
    (heatmap,) = grid.figures()
    assert (heatmap.kind, heatmap.x, heatmap.y) == ("heatmap", "length", "depth")
    Grid.group_by = ("length",)
    (line,) = Grid().figures()
    assert (line.kind, line.x, line.name) == ("line", "length", "by_length")
    Grid.group_by = ()
    assert Grid().figures() == ()
