"""``train(cfg)``: the library entry point behind ``needlework train`` (docs/formats.md §B).

Order of work, cheapest first, so bad input costs seconds: run-folder state (finished? resumable?)
-> backend preflight (API key, model path, GPU for QLoRA) -> read and validate every data row ->
write config.yaml + run.json -> the backend trains -> ``model.json`` last, so its presence means
the run finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from needlework.config import dump_yaml
from needlework.errors import UserError
from needlework.io import ensure_writable_dir, write_json
from needlework.runinfo import now, write_run_info
from needlework.training.config import TrainConfig
from needlework.training.data import load_training_rows
from needlework.training.runfiles import (
    CHECKPOINTS,
    MODEL_JSON,
    is_main_process,
    update_run_info,
)

# Files whose presence means a folder already holds (part of) a training run.
_RUN_MARKERS = ("config.yaml", "run.json", CHECKPOINTS, "openai_job.json", MODEL_JSON)


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Train as configured; return the run folder (it holds ``model.json``).

    With ``resume=True`` a finished run is returned as is, an unfinished one continues from its
    last checkpoint (or recorded OpenAI job); the config must equal the one the run started with.
    Without it, an existing run folder is an error rather than silently overwritten.
    """
    run_dir = Path(cfg.out_dir)
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
        if (run_dir / MODEL_JSON).is_file():
            return run_dir
    cfg.trainer.preflight(cfg)
    rows, stats = load_training_rows(cfg)
    new_folder = not run_dir.exists() or not any(run_dir.iterdir())
    ensure_writable_dir(run_dir)
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
    """Resuming under a different config would mix two runs under one config.yaml."""
    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"{saved}: unreadable; cannot check that resuming is safe") from None
    new = yaml.safe_load(dump_yaml(cfg))
    for config in (old, new):  # a label, not a setting: runs from before it was recorded resume
        if isinstance(config, dict):
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
