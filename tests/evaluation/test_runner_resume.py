"""Interrupted runs: finished predictions survive a crash, a rerun does only what is missing,
and the final files equal those of an uninterrupted run; unsafe resumes are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.evaluation import runner_units

from needlework.config import load_config
from needlework.errors import DataError, UserError
from needlework.evaluation.runner import EvalConfig, evaluate


@pytest.fixture(autouse=True)
def _units():
    with runner_units.registered():
        yield


def cfg_for(out: Path, model=None, bench=None, **extra) -> EvalConfig:
    return load_config(
        EvalConfig,
        data={
            "model": model or {"name": "nw_test_calculator"},
            "benchmarks": [bench or "nw_test_arith"],
            "out_dir": str(out),
            **extra,
        },
    )


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_crash_then_resume_loses_nothing_and_redoes_nothing(tmp_path):
    cfg = cfg_for(tmp_path / "a")
    runner_units.CRASH["after"] = 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(cfg, progress=False)
    run = tmp_path / "a" / "nw_test_arith"
    assert ids(run / "predictions.jsonl") == [f"arith-{i}" for i in range(5)]
    assert not (run / "metrics.json").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and "simulated crash" in info["error"]

    runner_units.CRASH["after"] = None
    runner_units.CALLS.clear()
    evaluate(cfg, progress=False)
    (prompts,) = runner_units.CALLS  # one call with only the 7 missing samples
    assert prompts == [f"What is {i} + {i}?" for i in range(5, 12)]
    assert ids(run / "predictions.jsonl") == [f"arith-{i}" for i in range(12)]  # no dupes
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["resumed_with"] == 5

    fresh = tmp_path / "b"
    evaluate(cfg_for(fresh), progress=False)
    for name in ("predictions.jsonl", "metrics.json"):
        assert (run / name).read_bytes() == (fresh / "nw_test_arith" / name).read_bytes()


def test_half_written_last_line_is_dropped(tmp_path, caplog):
    cfg = cfg_for(tmp_path)
    runner_units.CRASH["after"] = 3
    with pytest.raises(RuntimeError):
        evaluate(cfg, progress=False)
    pred = tmp_path / "nw_test_arith" / "predictions.jsonl"
    with pred.open("a") as fh:
        fh.write('{"id": "arith-3", "benchmark": "nw_te')  # killed mid-write
    runner_units.CRASH["after"] = None
    evaluate(cfg, progress=False)
    assert ids(pred) == [f"arith-{i}" for i in range(12)]
    assert "incomplete last line" in caplog.text


def test_growing_the_limit_continues_the_run(tmp_path):
    evaluate(cfg_for(tmp_path, limit=4), progress=False)
    runner_units.CALLS.clear()
    evaluate(cfg_for(tmp_path, limit=10), progress=False)
    assert len(runner_units.CALLS[0]) == 6
    m = json.loads((tmp_path / "nw_test_arith" / "metrics.json").read_text())
    assert m["n"] == 10


def test_changed_prompt_is_refused(tmp_path):
    evaluate(cfg_for(tmp_path, limit=3), progress=False)
    changed = {"name": "nw_test_arith", "prompt_style": "polite"}
    with pytest.raises(UserError, match="different benchmarks"):
        evaluate(cfg_for(tmp_path, bench=changed, limit=3), progress=False)
    (tmp_path / "nw_test_arith" / "config.yaml").unlink()  # even without the config...
    with pytest.raises(UserError) as info:
        evaluate(cfg_for(tmp_path, bench=changed, limit=3), progress=False)
    assert "sample 'arith-0' was made from a different prompt" in str(info.value)


def test_other_model_is_refused_but_throughput_knobs_may_change(tmp_path):
    evaluate(cfg_for(tmp_path, limit=3), progress=False)
    with pytest.raises(UserError, match="different model"):
        evaluate(
            cfg_for(tmp_path, model={"name": "scripted", "mode": "echo"}, limit=3), progress=False
        )
    evaluate(
        cfg_for(tmp_path, model={"name": "nw_test_calculator", "batch_size": 32}, limit=5),
        progress=False,
    )
    assert len(ids(tmp_path / "nw_test_arith" / "predictions.jsonl")) == 5


def test_corrupt_predictions_file_is_a_clear_error(tmp_path):
    evaluate(cfg_for(tmp_path, limit=3), progress=False)
    pred = tmp_path / "nw_test_arith" / "predictions.jsonl"
    lines = pred.read_text().splitlines()
    pred.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(DataError, match=r"predictions.jsonl:2: invalid JSON"):
        evaluate(cfg_for(tmp_path, limit=3), progress=False)
    pred.write_text(
        json.dumps({"id": "arith-0", "benchmark": "nw_test_arith", "output": "0"}) + "\n"
    )
    with pytest.raises(
        UserError, match=r"predictions\.jsonl:1: field 'prompt_sha256': is required"
    ):
        evaluate(cfg_for(tmp_path, limit=3), progress=False)


RECORD = ("run.json", "predictions.jsonl", "metrics.json", "config.yaml")


def test_rerunning_a_finished_run_rewrites_nothing(tmp_path, caplog):
    cfg = cfg_for(tmp_path, limit=6)
    evaluate(cfg, progress=False)
    run = tmp_path / "nw_test_arith"
    before = {name: (run / name).read_bytes() for name in RECORD}
    assert json.loads(before["run.json"])["status"] == "complete"
    runner_units.CALLS.clear()
    with caplog.at_level("INFO", logger="needlework.evaluation.runner"):
        evaluate(cfg, progress=False)
    assert runner_units.CALLS == []  # the model was not asked anything
    assert {name: (run / name).read_bytes() for name in RECORD} == before
    assert "nw_test_arith: already complete" in caplog.text


def test_finished_run_is_redone_when_the_request_differs(tmp_path):
    """Not the same finished run: a smaller limit (fewer samples), another variant tag, or an
    unfinished record must still be (re)computed, as before."""
    evaluate(cfg_for(tmp_path, limit=6), progress=False)
    run = tmp_path / "nw_test_arith"
    evaluate(cfg_for(tmp_path, limit=4), progress=False)
    assert json.loads((run / "metrics.json").read_text())["n"] == 4
    evaluate(cfg_for(tmp_path, limit=4, variant="base"), progress=False)
    assert json.loads((run / "run.json").read_text())["variant"] == "base"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    evaluate(cfg_for(tmp_path, limit=4, variant="base"), progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_rerun_with_skipped_samples_rewrites_nothing(tmp_path):
    cfg = cfg_for(
        tmp_path,
        model={"name": "nw_test_calculator", "max_context_chars": 60},
        bench={"name": "nw_test_arith", "long_every": 4},
        on_too_long="skip",
    )
    evaluate(cfg, progress=False)
    run = tmp_path / "nw_test_arith"
    before = {name: (run / name).read_bytes() for name in RECORD}
    assert json.loads(before["metrics.json"])["n_skipped"] == 3
    runner_units.CALLS.clear()
    evaluate(cfg, progress=False)
    assert runner_units.CALLS == []
    assert {name: (run / name).read_bytes() for name in RECORD} == before


def test_a_second_eval_into_a_busy_folder_stops_at_once(tmp_path):
    from needlework.io import exclusive_lock

    run = tmp_path / "nw_test_arith"
    run.mkdir(parents=True)
    runner_units.CALLS.clear()
    with exclusive_lock(run / ".lock"), pytest.raises(UserError) as info:  # another process
        evaluate(cfg_for(tmp_path, limit=3), progress=False)
    assert "another needlework eval is running" in str(info.value)
    assert runner_units.CALLS == [] and not (run / "predictions.jsonl").exists()
    evaluate(cfg_for(tmp_path, limit=3), progress=False)  # released: runs
    assert len(ids(run / "predictions.jsonl")) == 3


def test_an_endpoint_may_change_on_resume_and_is_recorded(tmp_path):
    """Same model name and prompts on another server: resumes; another model name does not."""
    old = {"name": "openai", "model": "m", "base_url": "http://127.0.0.1:8000/v1"}
    new = {**old, "base_url": "http://127.0.0.1:9000/v1", "concurrency": 4}
    cfg = cfg_for(tmp_path, model={"name": "scripted", "mode": "echo"}, limit=2)
    from needlework.evaluation.runner import check_resumable

    run = tmp_path / "r"
    run.mkdir()
    before = load_config(EvalConfig, data={**_as_dict(cfg), "model": old})
    (run / "config.yaml").write_text(yaml.safe_dump(_as_dict(before)))
    moved = load_config(EvalConfig, data={**_as_dict(cfg), "model": new})
    assert check_resumable(run, moved) == {
        "base_url": ["http://127.0.0.1:8000/v1", "http://127.0.0.1:9000/v1"],
        "concurrency": [16, 4],
    }
    other = load_config(EvalConfig, data={**_as_dict(cfg), "model": {**new, "model": "m2"}})
    with pytest.raises(UserError, match="different model"):
        check_resumable(run, other)


def _as_dict(cfg):
    from needlework.config import to_dict

    return to_dict(cfg)


def test_a_smaller_limit_records_only_its_samples_and_keeps_the_rest_aside(tmp_path):
    evaluate(cfg_for(tmp_path, limit=6), progress=False)
    run = tmp_path / "nw_test_arith"
    evaluate(cfg_for(tmp_path, limit=4), progress=False)
    assert ids(run / "predictions.jsonl") == [f"arith-{i}" for i in range(4)]
    assert json.loads((run / "metrics.json").read_text())["n"] == 4
    assert ids(run / "predictions.beyond_limit.jsonl") == ["arith-4", "arith-5"]
    runner_units.CALLS.clear()
    evaluate(cfg_for(tmp_path, limit=7), progress=False)  # the two kept aside are reused
    assert runner_units.CALLS == [["What is 6 + 6?"]]
    assert ids(run / "predictions.jsonl") == [f"arith-{i}" for i in range(7)]
    assert not (run / "predictions.beyond_limit.jsonl").exists()


def test_a_suite_folder_refuses_another_model_but_not_a_speed_field(tmp_path):
    """A suite (lm-eval's general) gets the same up-front resume rule as every benchmark."""
    evaluate(cfg_for(tmp_path, bench="nw_test_suite"), progress=False)
    with pytest.raises(UserError, match="different model"):
        evaluate(
            cfg_for(tmp_path, bench="nw_test_suite", model={"name": "scripted"}), progress=False
        )
    faster = {"name": "nw_test_calculator", "batch_size": 32}
    evaluate(cfg_for(tmp_path, bench="nw_test_suite", model=faster), progress=False)
    info = json.loads((tmp_path / "nw_test_suite" / "run.json").read_text())
    assert info["model_changed_on_resume"] == {"batch_size": [4, 32]}


def test_undecodable_run_records_are_clear_errors_or_redone(tmp_path):
    """Bytes that are not UTF-8 in a run folder's records: an unreadable config.yaml stops a
    resume with one line (it cannot be checked); an unreadable run.json/metrics.json only means
    the run is not known to be finished, so it is finished again from its predictions."""
    cfg = cfg_for(tmp_path / "a")
    evaluate(cfg, progress=False)
    run = tmp_path / "a" / "nw_test_arith"
    good = (run / "predictions.jsonl").read_bytes()
    for name in ("run.json", "metrics.json"):
        (run / name).write_bytes(b"\xff\xfe garbage \x80")
    evaluate(cfg, progress=False)
    assert json.loads((run / "metrics.json").read_text())["n"] > 0
    assert (run / "predictions.jsonl").read_bytes() == good
    (run / "config.yaml").write_bytes(b"\xff\xfe garbage \x80")
    with pytest.raises(UserError, match="config.yaml: not UTF-8 text"):
        evaluate(cfg, progress=False)
