"""The training log of a run folder: ``train_log.jsonl`` (live), ``train_log.csv`` and ``loss.png``.

The JSONL is the trainer's whole ``log_history`` rewritten atomically at every logging step, so it
is always complete and, after a resume, continues the restored history instead of duplicating it.
Rows are the trainer's own log dicts (``step``, ``epoch``, ``loss``, ``learning_rate``,
``grad_norm``, ``mean_token_accuracy``...; the last row holds ``train_runtime`` etc.).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from needlework.io import write_jsonl, write_text

LOG_JSONL = "train_log.jsonl"
LOG_CSV = "train_log.csv"
LOSS_PNG = "loss.png"


def write_logs(run_dir: Path, history: list[dict[str, Any]], *, plot: bool = True) -> None:
    """Write the JSONL, the CSV of the loss rows and (optionally) the loss plot."""
    write_jsonl(run_dir / LOG_JSONL, history)
    rows = [r for r in history if "loss" in r]
    columns = [k for k in ("step", "epoch", "loss", "learning_rate") if any(k in r for r in rows)]
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(run_dir / LOG_CSV, buf.getvalue())
    if plot and rows:
        plot_loss(rows, run_dir / LOSS_PNG, title=run_dir.name)


def plot_loss(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Training loss (answer tokens only, when masked) against optimizer step: the report's
    loss figure for this one run."""
    from needlework.reporting import plots

    series = plots.Series(title or "training loss", tuple(r["step"] for r in rows),
                          tuple(r["loss"] for r in rows))  # fmt: skip
    plots.save(plots.loss_figure([series], title=title or "training loss"), path)


def make_callback(run_dir: Path):
    """A ``TrainerCallback`` that keeps the run folder's log files current (main process only)."""
    from transformers import TrainerCallback

    class RunLogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                write_logs(run_dir, state.log_history, plot=False)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_logs(run_dir, state.log_history, plot=True)

    return RunLogCallback()
