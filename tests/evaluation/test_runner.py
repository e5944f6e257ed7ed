"""The evaluation runner end to end on test-only units: run-folder format, metrics with CIs and
breakdowns, too-long prompts, suite delegation, the CLI, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.evaluation import runner_units
from tests.evaluation.runner_units import ArithBench

from needlework.cli import main
from needlework.config import load_config
from needlework.errors import ConfigError, DataError, UserError
from needlework.evaluation.runner import EvalConfig, evaluate, prompt_sha256
from needlework.stats import wilson_interval


@pytest.fixture(autouse=True)
def _units():
    with runner_units.registered():
        yield


def make_cfg(tmp_path: Path, model=None, **extra) -> EvalConfig:
    """The oracle run (gold answers, no model) unless a model is given."""
    from needlework.models import parse_model_spec

    model = parse_model_spec(model) if isinstance(model, str) else model
    data = {
        **({"model": model} if model is not None else {"gold_answers": True}),
        "benchmarks": ["nw_test_arith"],
        "out_dir": str(tmp_path / "out"),
        **extra,
    }
    return load_config(EvalConfig, data=data)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gold_run_writes_the_run_folder_format(tmp_path):
    (run,) = evaluate(make_cfg(tmp_path), progress=False)
    assert run == tmp_path / "out" / "nw_test_arith"
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "run.json",
        "predictions.jsonl",
        "metrics.json",
        ".lock",  # the claim on the folder (an flock, released when the process ends)
    }
    rows = read_lines(run / "predictions.jsonl")
    samples = list(ArithBench().samples())
    assert [r["id"] for r in rows] == [s.id for s in samples]
    first = rows[0]
    assert set(first) == {
        "id", "benchmark", "prompt_sha256", "output", "scores", "answers", "meta", "messages"
    }  # fmt: skip
    assert first["messages"] == list(samples[0].messages)  # what the model saw
    assert first["prompt_sha256"] == prompt_sha256(samples[0]) and first["output"] == "0"
    assert first["meta"] == {"bucket": 0, "index": 0} and first["benchmark"] == "nw_test_arith"

    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 12 and m["n_skipped"] == 0 and m["model"] == "gold-answers"
    assert m["primary_metric"] == "exact_match" and m["benchmark"] == "nw_test_arith"
    em = m["metrics"]["exact_match"]
    assert em["mean"] == 1.0 and em["n"] == 12
    assert (em["ci_low"], em["ci_high"]) == wilson_interval(12, 12)
    chars = m["metrics"]["chars"]  # not 0/1: bootstrap interval around the mean
    assert chars["ci_low"] <= chars["mean"] <= chars["ci_high"] and chars["n"] == 12
    assert list(m["by"]["bucket"]) == ["0", "1", "2"]
    assert m["by"]["bucket"]["1"]["exact_match"]["n"] == 4

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["usage"] == {}  # no model was asked
    assert info["num_samples"] == 12 and info["resumed_with"] == 0 and "versions" in info
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"] is None and resolved["gold_answers"] is True
    assert resolved["benchmarks"][0]["name"] == "nw_test_arith"
    assert resolved["out_dir"] == str(tmp_path / "out")


def test_wrong_answers_score_zero_and_limit_cuts(tmp_path):
    cfg = make_cfg(tmp_path, {"name": "scripted", "mode": "constant", "text": "nope"}, limit=5)
    (run,) = evaluate(cfg, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 5 and m["metrics"]["exact_match"]["mean"] == 0.0
    assert len(read_lines(run / "predictions.jsonl")) == 5


def test_streaming_backend_and_several_benchmarks(tmp_path):
    cfg = make_cfg(
        tmp_path,
        {"name": "nw_test_calculator"},
        benchmarks=["nw_test_arith", {"name": "nw_test_arith", "tag": "b", "num_samples": 3}],
    )
    runs = evaluate(cfg, progress=False)
    assert [r.name for r in runs] == ["nw_test_arith", "nw_test_arith_b"]
    for run, n in zip(runs, (12, 3)):
        m = json.loads((run / "metrics.json").read_text())
        assert m["n"] == n and m["metrics"]["exact_match"]["mean"] == 1.0
        # each run folder's config names only its own benchmark (re-runnable on its own)
        assert len(yaml.safe_load((run / "config.yaml").read_text())["benchmarks"]) == 1


def test_too_long_prompt_stops_with_the_sample_named(tmp_path):
    cfg = make_cfg(
        tmp_path,
        {"name": "nw_test_calculator", "max_context_chars": 60},
        benchmarks=[{"name": "nw_test_arith", "long_every": 4}],
    )
    with pytest.raises(UserError) as info:
        evaluate(cfg, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "'arith-3'" in msg and "(and 2 more)" in msg
    assert "60-token context of calculator" in msg and "on_too_long=skip" in msg
    assert runner_units.CALLS == []  # checked before anything was generated


def test_too_long_prompts_skipped_and_counted(tmp_path):
    cfg = make_cfg(
        tmp_path,
        {"name": "nw_test_calculator", "max_context_chars": 60},
        benchmarks=[{"name": "nw_test_arith", "long_every": 4}],
        on_too_long="skip",
    )
    (run,) = evaluate(cfg, progress=False)
    rows = read_lines(run / "predictions.jsonl")
    skipped = [r for r in rows if r.get("skipped")]
    assert [r["id"] for r in skipped] == ["arith-3", "arith-7", "arith-11"]
    assert all(r["output"] is None and r["scores"] == {} for r in skipped)
    assert "tokens + 5 new tokens, over the 60-token context" in skipped[0]["skipped"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 9 and m["n_skipped"] == 3 and m["metrics"]["exact_match"]["mean"] == 1.0
    # rerunning the finished run duplicates no line (nor rewrites it: test_runner_resume.py)
    evaluate(cfg, progress=False)
    again = read_lines(run / "predictions.jsonl")
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def test_suite_benchmarks_are_delegated(tmp_path):
    cfg = make_cfg(tmp_path, "scripted:echo", benchmarks=["nw_test_suite"], limit=4)
    (run,) = evaluate(cfg, progress=False)
    bench = cfg.benchmarks[0]
    ((model_config, run_dir, limit),) = bench.seen
    assert model_config == cfg.model and Path(run_dir) == run and limit == 4
    assert json.loads((run / "metrics.json").read_text())["metrics"]["acc"]["mean"] == 0.5
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_gold_answers_is_refused_for_a_suite_and_with_a_model(tmp_path):
    with pytest.raises(ConfigError, match="nw_test_suite is scored by lm-eval"):
        make_cfg(tmp_path, benchmarks=["nw_test_arith", "nw_test_suite"])
    with pytest.raises(ConfigError, match="asks no model"):
        make_cfg(tmp_path, "scripted:echo", gold_answers=True)
    with pytest.raises(ConfigError, match="field 'model': no model given"):
        load_config(EvalConfig, data={"benchmarks": ["nw_test_arith"]})


def test_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        EvalConfig,
        data={"gold_answers": True, "benchmarks": ["nw_test_arith"], "limit": 2},
    )
    (run,) = evaluate(cfg, progress=False)
    parent = run.parent
    assert parent.parent == Path("runs") and run.name == "nw_test_arith"
    assert parent.name.endswith("-nw_test_arith-gold-answers") and parent.name[8] == "-"


def test_cli_short_form_and_config_file(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "eval",
            "--gold-answers",
            "--benchmark",
            "nw_test_arith",
            "--limit",
            "4",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("nw_test_arith: exact_match 1.000 [") and "n=4" in line
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(
        f"gold_answers: true\nbenchmarks: [nw_test_arith]\nout_dir: {tmp_path / 'cfg'}\n"
    )
    assert main(["eval", "--config", str(cfg_file), "limit=2"]) == 0
    assert len(read_lines(tmp_path / "cfg" / "nw_test_arith" / "predictions.jsonl")) == 2
    # validate knows the eval config kind
    assert main(["validate", str(cfg_file)]) == 0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["eval", "--benchmark", "nw_test_arith"], "no model"),
        (["eval", "--gold-answers"], "field 'benchmarks': expected at least 1 item(s)"),
        (
            ["eval", "--gold-answers", "--model", "scripted:echo", "--benchmark", "nw_test_arith"],
            "asks no model",
        ),
        (["eval", "--model", "bogus", "--benchmark", "nw_test_arith"], "expected hf:PATH"),
        (["eval", "--gold-answers", "--benchmark", "nw_test_arithm"], "did you mean"),
        (
            ["eval", "--gold-answers", "--benchmark", "nw_test_arith", "--limit", "0"],
            "limit",
        ),
        (
            ["eval", "--gold-answers", "--benchmark", "nw_test_arith", "bogus=1"],
            "unknown key(s) 'bogus'",
        ),
    ],
)
def test_cli_errors_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)] if "--out" not in argv else argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"field 'benchmarks': expected at least 1 item\(s\)"):
        make_cfg(tmp_path, benchmarks=[])
    with pytest.raises(ConfigError, match="share the run-folder label"):
        make_cfg(tmp_path, benchmarks=["nw_test_arith", {"name": "nw_test_arith"}])
    with pytest.raises(ConfigError, match="on_too_long"):
        make_cfg(tmp_path, on_too_long="truncate")


def test_malformed_benchmarks_are_caught(tmp_path):
    with pytest.raises(DataError, match="duplicate sample id 'same'"):
        evaluate(make_cfg(tmp_path, benchmarks=["nw_test_dupes"]), progress=False)
    broken = r"nw_test_arith_x: score\(\): field 'exact_match'.*'yes'"
    with pytest.raises(ConfigError, match=broken):
        evaluate(
            make_cfg(
                tmp_path,
                benchmarks=[{"name": "nw_test_arith", "tag": "x", "score_kind": "broken"}],
            ),
            progress=False,
        )


def test_cli_short_form_niah_uses_the_local_models_tokenizer(tiny_checkpoint, tmp_path):
    import argparse

    from needlework.evaluation.cli import build_eval_config

    args = argparse.Namespace(
        config=None,
        overrides=[],
        model=f"hf:{tiny_checkpoint}",
        benchmark=["niah"],
        suite=None,
        limit=1,
        out=str(tmp_path / "niah"),
    )
    (bench,) = build_eval_config(args).benchmarks
    assert bench.tokenizer == f"hf:{tiny_checkpoint}"
    args.model = "scripted:echo"  # no tokenizer to borrow: the benchmark's own rule applies
    (bench,) = build_eval_config(args).benchmarks
    assert bench.tokenizer is None


def test_benchmarks_sized_in_model_tokens_get_the_backends_tokenizer(tiny_checkpoint):
    """The runner hands a benchmark declaring ``needs_token_counter`` the backend's own
    tokenizer (any config form); one set explicitly, and other benchmarks, are left alone."""
    from needlework.config import load_config
    from needlework.evaluation.runner import EvalConfig

    data = {
        "model": {"name": "hf", "path": str(tiny_checkpoint)},
        "benchmarks": [
            {"name": "niah"},
            {"name": "niah", "tag": "own", "tokenizer": "chars"},
            {"name": "kv_retrieval"},
        ],
    }
    cfg = load_config(EvalConfig, None, (), data=data)
    assert [getattr(b, "tokenizer", None) for b in cfg.benchmarks] == [
        f"hf:{tiny_checkpoint}",
        "chars",
        None,
    ]
