"""What every run writes next to its results: the resolved config and the versions behind it."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from needlework import __version__
from needlework.config import dump_yaml
from needlework.errors import UserError
from needlework.io import read_json, write_json, write_text

# fmt: off
TRACKED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
           "tiktoken", "mistral-common", "sentencepiece", "faker", "lm-eval", "vllm", "openai",
           "numpy")
# fmt: on


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (``_`` read as ``-``), None if absent."""
    try:
        return metadata.version(dist.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes results."""
    found = {name: version(name) for name in TRACKED}
    out = {"needlework": __version__, "python": platform.python_version()}
    return out | {name: v for name, v in found.items() if v is not None}


def git_revision() -> str | None:
    """The needlework checkout's commit, when run from a git clone."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() or None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_run_info(out_dir: str | Path, config: Any, **extra: Any) -> dict[str, Any]:
    """Write ``config.yaml`` (resolved) and ``run.json`` (versions, git, command, extras)."""
    from needlework.runtime import thread_info

    out = Path(out_dir)
    write_text(out / "config.yaml", dump_yaml(config))
    info = {
        "needlework_version": __version__,
        "git_revision": git_revision(),
        "command": sys.argv,
        "started": now(),
        "versions": versions(),
        "threads": thread_info(),
        **extra,
    }
    write_json(out / "run.json", info)
    return info


def update_run_info(run_dir: str | Path, **fields: Any) -> None:
    """Merge ``fields`` into ``run.json`` (atomically; an unreadable one is started afresh)."""
    path = Path(run_dir) / "run.json"
    try:
        info = read_json(path, dict)
    except UserError:  # missing, not UTF-8, not JSON or not an object
        info = {}
    write_json(path, {**info, **fields})
