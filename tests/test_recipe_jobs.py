"""`needlework run --jobs N`: model steps run side by side in their own processes, each only
after the steps it reads; a failed one stops the run with one line and its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from needlework.errors import UserError
from needlework.experiment import Step, _run_parallel


def _sleeper(stamps: Path, seconds: float, code: int = 0) -> list[str]:
    """A step process: write its start and end times, then exit with ``code``."""
    script = (
        "import sys, time; t = time.time(); time.sleep(float(sys.argv[2])); "
        "open(sys.argv[1], 'a').write(f'{t} {time.time()}\\n'); print('step says hi'); "
        "sys.exit(int(sys.argv[3]))"
    )
    return [sys.executable, "-c", script, str(stamps), str(seconds), str(code)]


def _span(path: Path) -> tuple[float, float]:
    start, end = path.read_text().split()
    return float(start), float(end)


def test_steps_run_side_by_side_but_never_before_what_they_read(tmp_path):
    light: list[str] = []
    steps = [
        Step("data", lambda: False, lambda: light.append("data")),
        Step("eval base", lambda: False, lambda: None, after=(0,), heavy=True),
        Step("train a", lambda: False, lambda: None, after=(0,), heavy=True),
        Step("eval a", lambda: False, lambda: None, after=(0, 2), heavy=True),
        Step("report", lambda: False, lambda: light.append("report"), after=(0, 1, 2, 3)),
    ]
    stamps = {k: tmp_path / f"{k}.txt" for k in (2, 3, 4)}
    log: list[str] = []
    _run_parallel(steps, 2, lambda k: _sleeper(stamps[k], 0.6), tmp_path / "logs", log.append)
    base, train, evaluate = (_span(stamps[k]) for k in (2, 3, 4))
    assert base[0] < train[1] and train[0] < base[1]  # the two independent steps overlapped
    assert evaluate[0] >= train[1]  # the eval of a trained model waits for its training
    assert light == ["data", "report"]
    assert [line.split(" (")[0] for line in log if "running" in line] == [
        "[1/5] data", "[2/5] eval base", "[3/5] train a", "[4/5] eval a", "[5/5] report"
    ]  # fmt: skip
    assert (tmp_path / "logs" / "step03.log").read_text() == "step says hi\n"


def test_done_steps_are_skipped_and_never_started(tmp_path):
    steps = [
        Step("train a", lambda: True, lambda: None, heavy=True),
        Step("eval a", lambda: False, lambda: None, after=(0,), heavy=True),
    ]
    log: list[str] = []
    _run_parallel(steps, 2, lambda k: _sleeper(tmp_path / f"{k}.txt", 0), tmp_path, log.append)
    assert log[0] == "[1/2] train a (done, skipped)"
    assert not (tmp_path / "1.txt").exists() and (tmp_path / "2.txt").exists()


def test_a_failed_step_stops_the_run_in_one_line_and_stops_the_others(tmp_path):
    steps = [
        Step("train a", lambda: False, lambda: None, heavy=True),
        Step("train b", lambda: False, lambda: None, heavy=True),
        Step("eval b", lambda: False, lambda: None, after=(1,), heavy=True),
    ]
    commands = {
        1: _sleeper(tmp_path / "a.txt", 30),
        2: _sleeper(tmp_path / "b.txt", 0.2, code=2),
        3: _sleeper(tmp_path / "c.txt", 0),
    }
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        _run_parallel(steps, 2, commands.__getitem__, tmp_path, lambda _: None)
    assert time.monotonic() - start < 20  # the slow step was stopped, not waited for
    assert err.value.exit_code == 2
    msg = str(err.value)
    assert msg.startswith("[2/3] train b failed (exit 2): step says hi (whole log: ")
    assert "\n" not in msg
    assert not (tmp_path / "a.txt").exists()  # stopped before it finished
    assert not (tmp_path / "c.txt").exists()  # never started: what it reads failed


def test_bad_jobs_or_step_is_one_clear_error(monkeypatch):
    from needlework.experiment import run_recipe

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(UserError, match="--jobs: expected at least 1 process, got 0"):
        run_recipe("configs/recipes/tiny_cpu.yaml", jobs=0)
    with pytest.raises(UserError, match="--step: the recipe has steps 1 to 6, got 9"):
        run_recipe("configs/recipes/tiny_cpu.yaml", step=9)
