"""Data-parallel evaluation: several processes share one benchmark, one merged predictions.jsonl.

Run:  needlework eval --config configs/eval/kv_retrieval.yaml --workers 2        # this machine
      accelerate launch --num_processes 8 -m needlework eval --config ...          # 8 GPUs
      torchrun --nnodes 2 --nproc-per-node 8 ... -m needlework eval --config ...   # 2 nodes

No process group is needed: the launcher's ``RANK``/``WORLD_SIZE`` (set by ``accelerate launch``,
torchrun, and ``--workers``, which starts the processes itself) choose which samples a process
owns (every ``WORLD_SIZE``-th, by position in the benchmark's order, so the split does not depend
on what is already done). Each process appends its predictions to ``<run>/shards/w<W>-r<R>.jsonl``
as batches finish; rank 0 then waits until every sample has a row in the run folder, writes
predictions.jsonl in the benchmark's order (the same bytes as a single-process run) and the
metrics, and removes the shards. A resumed run, with any number of processes, counts the rows of
every shard file as done.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from needlework.config import NonNegativeInt, PositiveInt, config, validate
from needlework.errors import UserError

SHARDS = "shards"
ERRORS = "NEEDLEWORK_WORKER_ERRORS"
"""Set by :func:`launch` for its workers: the folder each writes its one-line error to."""


@config
class Worker:
    """This process's place in the launch."""

    rank: NonNegativeInt = 0
    """``RANK``: this process's index."""
    world: PositiveInt = 1
    """``WORLD_SIZE``: processes in the launch."""

    def __post_init__(self) -> None:
        if self.rank >= self.world:
            raise ValueError(f"rank: expected RANK < WORLD_SIZE ({self.world}), got {self.rank}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, position: int) -> bool:
        return position % self.world == self.rank

    def shard(self, run_dir: Path) -> Path:
        return run_dir / SHARDS / f"w{self.world}-r{self.rank}.jsonl"


def current() -> Worker:
    """Rank and world size from the launcher's environment (1 process outside a launcher)."""
    env = {"rank": os.environ.get("RANK", "0"), "world": os.environ.get("WORLD_SIZE", "1")}
    return validate(Worker, env, source="environment (RANK, WORLD_SIZE)")


def shard_files(run_dir: Path) -> list[Path]:
    folder = run_dir / SHARDS
    return sorted(folder.glob("w*-r*.jsonl")) if folder.is_dir() else []


def wait_for_all(
    run_dir: Path,
    ids: Sequence[str],
    read_rows: Any,
    *,
    stall_timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Rank 0: every row of the run folder once each id in ``ids`` has one.

    ``read_rows()`` returns the rows found so far. A rank that dies takes the launch down with it
    (accelerate and torchrun stop every process); the stall timeout only guards hand-started
    workers that never come.
    """
    last, last_change = -1, time.monotonic()
    while True:
        rows = read_rows()
        have = sum(1 for i in ids if i in rows)
        if have == len(ids):
            return rows
        if have != last:
            last, last_change = have, time.monotonic()
        elif time.monotonic() - last_change > stall_timeout_s:
            raise UserError(
                f"{run_dir}: {len(ids) - have} samples still have no prediction after "
                f"{stall_timeout_s:.0f}s without progress: did a worker stop? Run the same "
                f"command again to resume"
            )
        time.sleep(poll_s)


def launch(argv: Sequence[str], workers: int) -> int:
    """Run ``needlework`` with ``argv`` as ``workers`` local processes, each with its
    ``RANK``/``WORLD_SIZE`` and cores/workers threads (NEEDLEWORK_THREADS), so together they
    never oversubscribe the machine; returns the first failure's exit code, else 0.

    A worker that fails on bad input writes its one-line error to a folder shared with this
    process instead of printing it; the first is raised here, once, after the other workers are
    stopped. The workers stop when this process is interrupted, and (asked of Linux) when it
    dies, even by ``kill -9``, so none runs on unwatched.
    """
    import subprocess
    import tempfile

    from needlework.runtime import die_with_parent, env_for_processes

    with tempfile.TemporaryDirectory(prefix="needlework-workers-") as errors:
        env = {**env_for_processes(workers), ERRORS: errors, "WORLD_SIZE": str(workers)}
        cmd = [sys.executable, "-m", "needlework", *argv]
        procs = [
            subprocess.Popen(cmd, env={**env, "RANK": str(r)}, preexec_fn=die_with_parent)
            for r in range(workers)
        ]
        try:
            while (codes := [p.poll() for p in procs]) and any(c is None for c in codes):
                if any(codes):  # one failed: the others stop (their rows are kept)
                    break
                time.sleep(0.1)
        finally:  # also on Ctrl-C or SIGTERM here
            for p in procs:
                p.terminate()
            codes = [p.wait() for p in procs]
        failed = sorted(Path(errors).iterdir(), key=lambda p: p.stat().st_mtime_ns)
        if failed:
            raise UserError(failed[0].read_text(encoding="utf-8"))
    return next((c for c in codes if c), 0)


def report_failure(exc: UserError) -> bool:
    """In a worker of :func:`launch`: hand ``exc`` to the launcher, which says it once (True);
    elsewhere False."""
    errors = os.environ.get(ERRORS)
    if errors:
        Path(errors, f"rank{current().rank}").write_text(str(exc), encoding="utf-8")
    return bool(errors)
