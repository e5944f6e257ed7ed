"""``train(cfg)``: the library entry point behind ``needlework train`` (docs/formats.md §B).

Order of work, cheapest first, so bad input costs seconds: run-folder state (a file? someone
else's folder? finished? resumable?) -> backend preflight (API key, model and tokenizer, template,
scheduler, GPU for QLoRA) -> read and validate every data row -> create and lock the folder ->
write config.yaml + run.json -> the backend trains -> ``model.json`` last, so its presence means
the run finished. A folder that already holds a run is locked before it is judged, so a run still
in progress is reported as busy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from needlework.config import dump_yaml, load_config
from needlework.errors import UserError
from needlework.io import ensure_writable_dir, exclusive_lock, write_json
from needlework.runinfo import now, write_run_info
from needlework.training.config import TrainConfig
from needlework.training.data import ChatRow, load_training_rows
from needlework.training.runfiles import (
    CHECKPOINTS,
    MODEL_JSON,
    is_main_process,
    update_run_info,
)

# Files whose presence means a folder already holds (part of) a training run.
_RUN_MARKERS = ("config.yaml", "run.json", CHECKPOINTS, "openai_job.json", MODEL_JSON)
# Held by the process training into the folder (a second one stops at once).
LOCK = ".lock"


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Train as configured; return the run folder (it holds ``model.json``).

    With ``resume=True`` a finished run is returned as is, an unfinished one continues from its
    last checkpoint (or recorded OpenAI job); the config must equal the one the run started with.
    Without it, an existing run folder is an error rather than silently overwritten; a non-empty
    folder that is not a training run is refused either way. The folder is locked while it is
    trained into, so a second process stops at once instead of training into it too.
    """
    run_dir = Path(cfg.out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: out_dir is a file, not a folder; choose a folder path")
    entries = _entries(run_dir)
    if entries and is_main_process() and not is_training_run(run_dir):
        foreign = "config.yaml" in entries  # a dataset or eval folder has one too
        why = "its config.yaml is not a training config" if foreign else f"{entries[0]} found"
        raise UserError(
            f"{run_dir}: not empty and not a needlework training run folder ({why}); "
            f"choose a new or empty out_dir"
        )
    if entries:  # a run exists: claim it first, so one still running is reported as busy
        with _claim(run_dir):
            return _train_claimed(cfg, run_dir, resume, new_folder=False)
    data = _checked_input(cfg)  # before the folder exists: bad input leaves nothing behind
    ensure_writable_dir(run_dir)
    with _claim(run_dir):
        return _train_claimed(cfg, run_dir, resume, new_folder=True, data=data)


def _entries(run_dir: Path) -> list[str]:
    """What the folder holds, its lock file aside ([] when it does not exist)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK)


def _checked_input(cfg: TrainConfig) -> tuple[list[ChatRow], dict[str, Any]]:
    """Backend preflight, then every data row read and validated."""
    cfg.trainer.preflight(cfg)
    return load_training_rows(cfg)


def _train_claimed(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    *,
    new_folder: bool,
    data: tuple[list[ChatRow], dict[str, Any]] | None = None,
) -> Path:
    """Judge the folder, record, train, write model.json last; the caller holds the lock.

    Judged here, under the lock, because another process may have started or finished the run
    since the caller looked (the preflight and the data took time)."""
    if _judge(cfg, run_dir, resume):
        return run_dir
    rows, stats = data if data is not None else _checked_input(cfg)
    name = getattr(type(cfg.trainer), "registry_name", type(cfg.trainer).__name__)
    if is_main_process():
        if resume and (run_dir / "run.json").is_file():
            update_run_info(run_dir, resumed=now(), data=stats)
        else:
            write_run_info(run_dir, cfg, backend=name, data=stats)
    try:
        out = cfg.trainer.train(cfg, run_dir, rows, resume=resume)
    except BaseException as exc:
        if is_main_process():
            _after_failure(run_dir, new_folder, exc)
        raise
    if is_main_process():
        from needlework.models import relative_to_run

        out = relative_to_run(out, run_dir)
        update_run_info(run_dir, finished=now(), model=out)
        write_json(run_dir / MODEL_JSON, out)
    return run_dir


def _judge(cfg: TrainConfig, run_dir: Path, resume: bool) -> bool:
    """True when ``run_dir`` holds this run finished (``--resume``: nothing to do); raises when
    it may not be trained into; False when training may start or continue there."""
    started = [m for m in _RUN_MARKERS if (run_dir / m).exists()]
    # Only rank 0 judges: under a multi-process launch the others may look after rank 0 has
    # already written config.yaml (the launcher stops every rank when rank 0 fails).
    if started and not resume and is_main_process():
        raise UserError(
            f"{run_dir}: already holds a training run ({started[0]}); pass --resume "
            f"to continue it, or choose another out_dir"
        )
    if resume and (run_dir / "config.yaml").is_file():
        check_same_config(cfg, run_dir / "config.yaml")
        return (run_dir / MODEL_JSON).is_file()
    return False


def is_training_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` was written by ``needlework train``: its config.yaml is a training
    config (a dataset or eval folder has a config.yaml and run.json too), or, that file being
    unreadable, it holds checkpoints, an OpenAI job or a model.json."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return any((run_dir / m).exists() for m in (CHECKPOINTS, "openai_job.json", MODEL_JSON))
    return isinstance(config, dict) and {"trainer", "train_path"} <= set(config)


@contextlib.contextmanager
def _claim(run_dir: Path) -> Iterator[None]:
    """The folder's lock for the block (rank 0 only: the other ranks of one launch share it)."""
    if not is_main_process():
        yield
        return
    busy = (
        f"{run_dir}: another needlework train is running into this folder; wait for it to "
        "finish (then --resume continues or returns it) or choose another out_dir"
    )
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(run_dir / LOCK, busy=busy))
        except FileNotFoundError:  # the folder was removed under us by the run that held it
            raise UserError(busy) from None
        yield


def _after_failure(run_dir: Path, new_folder: bool, exc: BaseException) -> None:
    """A run that failed before its first checkpoint (or OpenAI job) leaves no folder behind,
    so the same command can simply be run again; otherwise run.json says why it stopped and
    ``--resume`` continues it."""
    import shutil

    saved = (run_dir / CHECKPOINTS).is_dir() and any((run_dir / CHECKPOINTS).iterdir())
    if new_folder and not saved and not (run_dir / "openai_job.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    update_run_info(run_dir, status="interrupted", error=f"{type(exc).__name__}: {exc}"[:500])


def check_same_config(cfg: TrainConfig, saved: Path) -> None:
    """Resuming under a different config would mix two runs under one config.yaml. The saved
    one is read as a TrainConfig, so a field added since it was written compares as its
    default."""
    old, new = (yaml.safe_load(dump_yaml(c)) for c in (load_config(TrainConfig, saved), cfg))
    for config in (old, new):  # a label, not a setting: runs from before it was recorded resume
        config.pop("variant", None)
    diff = _diff(old, new)
    if diff:
        raise UserError(
            f"{saved}: --resume with a different config ({', '.join(diff[:3])}); "
            f"resume with the original settings or choose another out_dir"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]
