"""Process-level compute settings the project decides itself: CPU threads and bf16 support.

Why here and not in the user's environment: on the 2-core machines needlework is built on, one
torch process per core beats two threads in one process, and several workers that each take every
core oversubscribe the machine (measured 2-3.5x slower). So every command sets its thread count
before torch does any work: ``NEEDLEWORK_THREADS`` if set, else ``OMP_NUM_THREADS`` if the user set
it, else the usable cores divided by the processes on this machine (``LOCAL_WORLD_SIZE`` under
``accelerate launch``/torchrun), at least 1. What was chosen is recorded in every run.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from needlework.config import PositiveInt, config, validate

_CHOSEN: dict[str, Any] = {}


@config
class Settings:
    """needlework's environment variables, read and checked in one place (:func:`settings`)."""

    NEEDLEWORK_DATA: Path | None = None
    """Folder of local data in the ``data/`` layout (lost-in-the-middle/, mmlu/, ...), looked in
    before ``./data``."""
    NEEDLEWORK_CACHE: Path = Path("~/.cache/needlework")
    """needlework's cache: imported models, probe results, hashes."""
    NEEDLEWORK_THREADS: PositiveInt | None = None
    """CPU threads for this process (else OMP_NUM_THREADS, else cores / processes)."""
    NEEDLEWORK_TIKTOKEN_DIR: Path | None = None
    """Folder holding ``<encoding>.tiktoken`` files for the ``tiktoken:`` token counters."""

    def __post_init__(self) -> None:
        cache = self.NEEDLEWORK_CACHE.expanduser()
        if cache.exists() and not cache.is_dir():
            raise ValueError(f"NEEDLEWORK_CACHE: {cache} is a file; expected a folder")


def settings() -> Settings:
    """The environment as :class:`Settings` (unset or empty variables take the default); a bad
    value is one line naming the variable."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(Settings)]
    env = {k: os.environ[k] for k in names if os.environ.get(k, "").strip()}
    return validate(Settings, env, source="environment")


def cache_dir() -> Path:
    """needlework's cache folder: ``$NEEDLEWORK_CACHE``, else ``~/.cache/needlework``."""
    return settings().NEEDLEWORK_CACHE.expanduser()


def cache_table(name: str) -> tuple[Path, dict[str, Any]]:
    """A small JSON table in :func:`cache_dir`: its path and contents ({} when missing or
    unreadable: a cache only saves work)."""
    import json

    path = cache_dir() / name
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    return path, known if isinstance(known, dict) else {}


def save_cache_table(path: Path, known: dict[str, Any]) -> None:
    """Write a :func:`cache_table` back; a read-only or unusable cache folder only costs the next
    run the work again, so it is never an error."""
    from needlework.errors import UserError
    from needlework.io import write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, known)
    except (OSError, UserError):
        pass


def usable_cpus() -> int:
    """Cores this process may run on (affinity masks and container limits included)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def local_processes() -> int:
    """Processes of this launch on this machine (1 outside a launcher)."""
    for var in ("LOCAL_WORLD_SIZE", "NEEDLEWORK_LOCAL_WORKERS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def env_for_processes(n: int) -> dict[str, str]:
    """The environment for ``n`` processes started side by side on this machine: each gets
    cores/n threads (``NEEDLEWORK_THREADS``), so together they never oversubscribe it."""
    return {
        **os.environ,
        "NEEDLEWORK_THREADS": str(max(1, usable_cpus() // n)),
        "NEEDLEWORK_LOCAL_WORKERS": str(n),
    }


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): ask Linux for SIGTERM when the parent dies, even by
    ``kill -9``, so no worker or step goes on unwatched beside a rerun; elsewhere nothing."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def default_threads() -> tuple[int, str]:
    """(threads, why) following the rule in the module docstring."""
    own = settings().NEEDLEWORK_THREADS
    if own is not None:
        return own, "NEEDLEWORK_THREADS"
    value = os.environ.get("OMP_NUM_THREADS", "").strip()  # another tool's: used when usable
    if value.isdigit() and int(value) >= 1:
        return int(value), "OMP_NUM_THREADS"
    procs = local_processes()
    return max(1, usable_cpus() // procs), f"{usable_cpus()} cores / {procs} process(es)"


def configure_threads() -> dict[str, Any]:
    """Set torch's intra-op threads (and OMP/MKL for libraries started later); idempotent.

    Called by the CLI before any command runs. Setting the environment variables first matters:
    torch reads them when it initialises its thread pool, tokenizers and numpy when they load.
    """
    if _CHOSEN:
        return dict(_CHOSEN)
    threads, why = default_threads()
    # torch sizes its pool from MKL_NUM_THREADS too: a parent's value must not leak into workers
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import sys

    if "torch" in sys.modules:  # else torch reads OMP_NUM_THREADS when it is first imported
        sys.modules["torch"].set_num_threads(threads)
    _CHOSEN.update(threads=threads, source=why, usable_cpus=usable_cpus())
    return dict(_CHOSEN)


def thread_info() -> dict[str, Any]:
    """What run.json records: the threads torch really uses (also when set by someone else)."""
    info = dict(_CHOSEN) if _CHOSEN else {"source": "not set by needlework (library call)"}
    import sys

    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
        info.setdefault("threads", info["torch_threads"])
    return info


@lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX); elsewhere torch emulates
    bf16 and it is always slower than float32."""
    try:
        import torch

        if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
            return True
    except (ImportError, AttributeError):
        pass
    return bool({"avx512_bf16", "amx_bf16"} & set(_cpuinfo("flags").split()))


def _cpuinfo(field: str) -> str:
    """The first ``field : value`` of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_name() -> str:
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _probe_speedup() -> float:
    """float32 time / bf16 time of a transformer-sized linear layer, forward and backward."""
    import time

    import torch

    def run(dtype: torch.dtype) -> float:
        gen = torch.Generator().manual_seed(0)
        layer = torch.nn.Linear(576, 1536).to(dtype)
        x = torch.randn(512, 576, generator=gen).to(dtype).requires_grad_()
        best = float("inf")
        for _ in range(4):
            t = time.perf_counter()
            for _ in range(4):
                layer(x).sum().backward()
            best = min(best, time.perf_counter() - t)
        return best

    return run(torch.float32) / run(torch.bfloat16)


@lru_cache(maxsize=1)
def cpu_bf16_faster() -> bool:
    """bf16 pays on this CPU: it has bf16 instructions AND a short probe measures bf16 at least
    1.2x faster than float32. Measured, not assumed: an AMD EPYC with AVX512-BF16 ran a 135M model
    ~2x faster in bf16, while an Intel Xeon with the same flag ran it ~1.4x slower. The result
    is cached per CPU model and torch version in ``$NEEDLEWORK_CACHE`` (~/.cache/needlework)."""
    if not cpu_bf16_native():
        return False

    import torch

    key = f"{_cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path, known = cache_table("cpu_bf16_probe.json")
    if key not in known:
        known[key] = round(_probe_speedup(), 3)
        save_cache_table(path, known)
    return float(known[key]) >= 1.2


def _bf16(on_cpu: Callable[[], bool]) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return on_cpu()


def bf16_supported() -> bool:
    """bf16 is native here: a bf16-capable CUDA device, or a CPU with bf16 instructions."""
    return _bf16(cpu_bf16_native)


def bf16_preferred() -> bool:
    """The default: bf16 on bf16 GPUs, and on CPUs where it measures faster (see above)."""
    return _bf16(cpu_bf16_faster)
