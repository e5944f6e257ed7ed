"""Data-parallel evaluation: workers split the samples, rank 0 merges one predictions.jsonl that
is byte-identical to a single-process run, and any mix of interrupted worker runs resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.evaluation import runner_units

from needlework.config import load_config
from needlework.evaluation import parallel
from needlework.evaluation.runner import EvalConfig, evaluate

FILES = ("predictions.jsonl", "metrics.json")


@pytest.fixture(autouse=True)
def _units():
    with runner_units.registered():
        yield


def cfg_for(out: Path, **extra) -> EvalConfig:
    data = {
        "model": {"name": "nw_test_calculator"},
        "benchmarks": ["nw_test_arith"],
        "out_dir": str(out),
        **extra,
    }
    return load_config(EvalConfig, data=data)


def as_worker(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def single(tmp_path: Path) -> Path:
    evaluate(cfg_for(tmp_path / "single"), progress=False)
    return tmp_path / "single" / "nw_test_arith"


def test_worker_split_is_by_position_and_covers_everything():
    workers = [parallel.Worker(r, 3) for r in range(3)]
    owners = [[w.rank for w in workers if w.owns(k)] for k in range(10)]
    assert owners == [[k % 3] for k in range(10)]


def test_two_workers_merge_byte_identical_to_one_process(tmp_path, monkeypatch):
    ref = single(tmp_path)
    cfg = cfg_for(tmp_path / "par")
    run = tmp_path / "par" / "nw_test_arith"
    as_worker(monkeypatch, 1, 2)
    runner_units.CALLS.clear()
    evaluate(cfg, progress=False)  # rank 1 predicts its half and returns
    assert [[f"What is {i} + {i}?" for i in range(1, 12, 2)]] == runner_units.CALLS
    assert not (run / "predictions.jsonl").exists() and not (run / "metrics.json").exists()
    as_worker(monkeypatch, 0, 2)
    evaluate(cfg, progress=False)  # rank 0: its half, then the merge
    for name in FILES:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert not (run / parallel.SHARDS).exists()
    assert sorted(p.name for p in run.glob(".lock*")) == [".lock"]  # workers' claims went too
    assert json.loads((run / "run.json").read_text())["workers"] == 2


def test_interrupted_workers_resume_with_another_worker_count(tmp_path, monkeypatch):
    ref = single(tmp_path)
    cfg = cfg_for(tmp_path / "par")
    run = tmp_path / "par" / "nw_test_arith"
    as_worker(monkeypatch, 1, 2)
    runner_units.CRASH["after"] = 2  # rank 1 dies after two of its six samples
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(cfg, progress=False)
    runner_units.CRASH["after"] = None
    with (run / parallel.SHARDS / "w2-r1.jsonl").open("a") as fh:
        fh.write('{"id": "arith-5", "outp')  # a line cut short by kill -9
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    runner_units.CALLS.clear()
    evaluate(cfg, progress=False)  # one process finishes the rest
    done_by_rank1 = {1, 3}
    assert [
        [f"What is {i} + {i}?" for i in range(12) if i not in done_by_rank1]
    ] == runner_units.CALLS
    for name in FILES:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert not (run / parallel.SHARDS).exists()


def test_rank_zero_waits_then_reports_a_stalled_worker(tmp_path, monkeypatch):
    from needlework.errors import UserError

    rows = {"a": {}}
    with pytest.raises(UserError, match="1 samples still have no prediction"):
        parallel.wait_for_all(tmp_path, ["a", "b"], lambda: rows, stall_timeout_s=0.2, poll_s=0.05)


def test_bad_launcher_environment_is_one_line(monkeypatch):
    from needlework.errors import UserError

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"RANK, WORLD_SIZE\): field 'rank': expected RANK < "):
        parallel.current()


@pytest.mark.slow
def test_workers_flag_launches_processes_and_matches_single_process(tmp_path, tiny_checkpoint):
    """The real launch: ``needlework eval --workers 2`` on the tiny HF model, two processes."""
    data = Path(__file__).parents[1] / "fixtures" / "kv_eval_tiny.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model: {{name: hf, path: '{tiny_checkpoint}', dtype: float32, batch_size: 4}}\n"
        f"benchmarks: [{{name: kv_retrieval, data_path: '{data}', max_new_tokens: 40}}]\n"
    )

    def run(out: Path, *extra: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "needlework",
            "eval",
            "--config",
            str(config),
            "--out",
            str(out),
            *extra,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run(tmp_path / "one")
    run(tmp_path / "two", "--workers", "2")
    for name in FILES:
        a = (tmp_path / "one" / "kv_retrieval" / name).read_bytes()
        b = (tmp_path / "two" / "kv_retrieval" / name).read_bytes()
        assert a == b, name
    info = json.loads((tmp_path / "two" / "kv_retrieval" / "run.json").read_text())
    assert info["workers"] == 2 and info["threads"]["threads"] >= 1


def test_answer_budget_counts_characters_without_a_token_counter():
    from needlework.evaluation.base import answer_budget
    from needlework.records import Sample

    answers = ("a" * 10, "b" * 60)
    samples = [
        Sample(id=str(i), messages=({"role": "user", "content": "q"},), answers=(a,))
        for i, a in enumerate(answers)
    ]
    assert answer_budget(samples) == 60 + 15
    assert answer_budget(samples[:1]) == 10 + 8


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_killing_the_launcher_stops_its_workers(tmp_path, signal_name):
    """``eval --workers 2`` killed (SIGTERM, or kill -9) leaves no worker running on: torchrun
    is told to stop them, by the launcher or by Linux when the launcher dies."""
    import signal
    import time

    pytest.importorskip("openai")
    from tests.models.openai_server import FakeOpenAI

    fixture = Path(__file__).parents[1] / "fixtures" / "kv_eval_tiny.jsonl"
    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["NW_TEST_OPENAI_KEY"] = "sk-test"
    with FakeOpenAI(delay_s=2.0) as slow:  # 8 prompts, one at a time, 2 s each: ~8 s per worker
        cmd = [
            sys.executable, "-m", "needlework", "eval", "--model", f"openai:m@{slow.base_url}",
            "--benchmark", "kv_retrieval", f"benchmarks.0.data_path={fixture}", f"out_dir={out}",
            "model.api_key_env=NW_TEST_OPENAI_KEY", "model.concurrency=1", "--workers", "2",
        ]  # fmt: skip
        launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not slow.bodies and time.monotonic() < deadline:  # workers are asking
            time.sleep(0.2)
        assert slow.bodies, "the workers never sent a request"
        launcher.send_signal(getattr(signal, signal_name))
        launcher.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _processes_mentioning(str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_mentioning(str(out)) == []
    assert not (out / "kv_retrieval" / "metrics.json").exists()  # stopped, not finished


def _eval_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "needlework", "eval", "--model", "scripted:echo", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing data", "nope.jsonl: not found; make an eval split"),
        ("out is a file", "cannot create output folder"),
        ("suite", "general: lm-eval runs a suite in one process"),
    ],
)
def test_worker_failures_are_one_line_once(tmp_path, case, needle):
    """Every error inside ``eval --workers 2`` is said once, in one line, exit 2, with no
    launcher traceback and nothing written; the general suite is refused before any work."""
    fixture = Path(__file__).parents[1] / "fixtures" / "kv_eval_tiny.jsonl"
    out = tmp_path / "out"
    args = ["--benchmark", "kv_retrieval", f"benchmarks.0.data_path={fixture}", "--out", str(out)]
    if case == "missing data":
        args[2] = f"benchmarks.0.data_path={tmp_path / 'nope.jsonl'}"
    elif case == "out is a file":
        out.write_text("not a folder")
    else:
        args = ["--suite", "general", "--out", str(out)]
    done = _eval_cli(*args, "--workers", "2", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
    assert lines[0].startswith("needlework eval: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if out.is_file() else [])
