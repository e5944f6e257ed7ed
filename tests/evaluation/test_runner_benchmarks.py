"""Every registered long-context benchmark through the runner: the oracle run (gold answers) scores
1.0 on the primary metric (prompts, scorers and aggregation agree), a wrong constant 0.0; the
tiny local HF model and the OpenAI backend (local server) run through the same runner."""

from __future__ import annotations

import json

import pytest

from needlework.config import load_config
from needlework.evaluation.runner import EvalConfig, evaluate
from needlework.registry import benchmarks

contracts = pytest.importorskip("tests.evaluation.test_benchmark_contracts")
CONFIGS = contracts.CONFIGS  # the benchmarks owner's fixture configs, one per variant


def run(tmp_path, model, bench_cfg, **extra) -> dict:
    who = {"model": model} if model is not None else {"gold_answers": True}
    cfg = load_config(
        EvalConfig, data={**who, "benchmarks": [bench_cfg], "out_dir": str(tmp_path), **extra}
    )
    (run_dir,) = evaluate(cfg, progress=False)
    return json.loads((run_dir / "metrics.json").read_text())


def test_configs_cover_every_registered_benchmark():
    assert {c["name"] for c in CONFIGS.values()} == set(benchmarks.names()) - {"general"}


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_gold_answers_and_wrong_through_each_benchmark(tmp_path, key):
    gold = run(tmp_path / "gold", None, CONFIGS[key], limit=6)
    primary = gold["primary_metric"]
    assert gold["n"] > 0 and gold["metrics"][primary]["mean"] == 1.0, gold["metrics"]
    bench = load_config(
        EvalConfig, data={"model": "scripted", "benchmarks": [CONFIGS[key]]}
    ).benchmarks[0]
    assert set(gold["by"]) == set(bench.group_by)
    for groups in gold["by"].values():
        assert sum(g[primary]["n"] for g in groups.values()) == gold["n"]
    wrong = run(
        tmp_path / "wrong",
        {"name": "scripted", "mode": "constant", "text": contracts.WRONG},
        CONFIGS[key],
        limit=6,
    )
    assert wrong["metrics"][primary]["mean"] == 0.0


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_tiny_hf_model_through_each_benchmark(tmp_path, tiny_checkpoint, key):
    metrics = run(
        tmp_path,
        {"name": "hf", "path": str(tiny_checkpoint), "batch_size": 2},
        CONFIGS[key],
        limit=2,
        max_new_tokens=4,
    )
    assert metrics["n"] == 2 and metrics["n_skipped"] == 0
    assert metrics["model"] == f"hf:{tiny_checkpoint.parent.name}/model"
    (run_dir,) = list(tmp_path.iterdir())
    outputs = [json.loads(x)["output"] for x in (run_dir / "predictions.jsonl").open()]
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["usage"]["requests"] == 2
    assert info["usage"]["prompt_tokens"] > 0


def test_openai_backend_through_the_runner(tmp_path, monkeypatch):
    pytest.importorskip("openai")
    from tests.models.openai_server import FakeOpenAI

    monkeypatch.setenv("NW_TEST_OPENAI_KEY", "sk-test")
    with FakeOpenAI(api_key="sk-test") as srv:
        model = {
            "name": "openai",
            "model": "m",
            "base_url": srv.base_url,
            "api_key_env": "NW_TEST_OPENAI_KEY",
            "concurrency": 4,
        }
        metrics = run(tmp_path, model, CONFIGS["kv_retrieval"], limit=5)
    assert metrics["n"] == 5 and metrics["model"].startswith("openai:m@127.0.0.1:")
    (run_dir,) = list(tmp_path.iterdir())
    usage = json.loads((run_dir / "run.json").read_text())["usage"]
    assert usage["requests"] == 5 and usage["completion_tokens"] == 10
    assert usage["prompt_tokens"] > 0 and usage["retries"] == 0
    assert all(b["temperature"] == 0 for b in srv.bodies)
