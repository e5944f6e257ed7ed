"""Data-parallel evaluation: several processes share one benchmark, one merged predictions.jsonl.

Run:  needlework eval --config configs/eval/kv_retrieval.yaml --workers 2        # this machine
      accelerate launch --num_processes 8 -m needlework eval --config ...          # 8 GPUs
      torchrun --nnodes 2 --nproc-per-node 8 ... -m needlework eval --config ...   # 2 nodes

No process group is needed: the launcher's ``RANK``/``WORLD_SIZE`` (set by ``accelerate launch``,
torchrun and ``--workers``) choose which samples a process owns (every ``WORLD_SIZE``-th, by
position in the benchmark's order, so the split does not depend on what is already done). Each
process appends its predictions to ``<run>/shards/w<W>-r<R>.jsonl`` as batches finish; rank 0 then
waits until every sample has a row in the run folder, writes predictions.jsonl in the benchmark's
order (the same bytes as a single-process run) and the metrics, and removes the shards. A resumed
run, with any number of processes, counts the rows of every shard file as done.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from needlework.errors import UserError

SHARDS = "shards"


@dataclass(frozen=True)
class Worker:
    """This process's place in the launch."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, position: int) -> bool:
        return position % self.world == self.rank

    def shard(self, run_dir: Path) -> Path:
        return run_dir / SHARDS / f"w{self.world}-r{self.rank}.jsonl"


def current() -> Worker:
    """Rank and world size from the launcher's environment (1 process outside a launcher)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(
            f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: "
            f"expected integers (set by accelerate launch or torchrun)"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank}, WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return Worker(rank, world)


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
    """Re-run ``needlework`` with ``argv`` as ``workers`` local processes through torchrun.

    Each worker gets cores/workers threads (NEEDLEWORK_THREADS), so together they never
    oversubscribe the machine; torchrun's own default of one thread is replaced by that.
    torchrun stops its workers when it gets SIGTERM: it gets one when this process is
    interrupted, and from Linux when this process dies (``kill -9``), so no worker runs on
    unwatched.
    """
    import subprocess

    from needlework.runtime import die_with_parent, env_for_processes

    env = env_for_processes(workers)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={workers}",
        "-m",
        "needlework",
        *argv,
    ]
    proc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent)
    try:
        return proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM here: let torchrun stop its workers, then go
        proc.terminate()
        proc.wait()
        raise


def strip_workers(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--workers N`` / ``--workers=N`` (the launched processes must not
    launch again)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out
