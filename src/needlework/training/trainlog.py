"""The training log of a run folder: ``train_log.jsonl`` (live), ``train_log.csv`` and ``loss.png``.

The JSONL is the trainer's whole ``log_history`` rewritten atomically at every logging step, so it
is always complete and, after a resume, continues the restored history instead of duplicating it.
Rows are the trainer's own log dicts (``step``, ``epoch``, ``loss``, ``learning_rate``,
``grad_norm``, ``mean_token_accuracy``...; the last row holds ``train_runtime`` etc.).

Besides every ``logging_steps``, a row is also logged at every checkpoint and at the last step,
so the history saved with a checkpoint covers every step up to it: the loss of the whole run
(``train_loss`` of the last row and of run.json) is then the same whether or not it was resumed
(the Trainer's own ``train_loss`` covers only the steps run by the last process).
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


def whole_run_loss(history: list[dict[str, Any]]) -> float | None:
    """Mean training loss per optimizer step over the whole run, from the logged rows (each
    row's ``loss`` is the mean over the steps since the row before); None before any row."""
    total, last = 0.0, 0
    for row in history:
        if "loss" in row and "step" in row and row["step"] > last:
            total += row["loss"] * (row["step"] - last)
            last = row["step"]
    return total / last if last else None


def finish_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` with the closing summary row's ``train_loss`` made the whole run's (edited in
    place: it is the trainer's state, saved nowhere after the end of training)."""
    if history and "train_runtime" in history[-1]:
        history[-1]["train_loss"] = whole_run_loss(history)
    return history


def plot_loss(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Training loss (answer tokens only, when masked) against optimizer step, drawn as the
    report draws one run's curve (no timestamp in the PNG: equal logs give equal bytes)."""
    from matplotlib.figure import Figure

    from needlework.io import atomic_write

    title = title or "training loss"
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, losses, label=title, markersize=4, markevery=max(1, len(steps) // 12),
            color="C0", marker="o", linestyle="-")  # fmt: skip
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, metadata={"Software": None})


def make_callback(run_dir: Path):
    """A ``TrainerCallback`` that keeps the run folder's log files current (main process only)."""
    from transformers import TrainerCallback

    class RunLogCallback(TrainerCallback):
        restored = 0  # rows of the history restored from a checkpoint
        tokens_before = 0.0  # TRL's num_tokens at the checkpoint (TRL restarts it from 0)

        def on_train_begin(self, args, state, control, **kwargs):
            self.restored = len(state.log_history)
            seen = [r["num_tokens"] for r in state.log_history if "num_tokens" in r]
            self.tokens_before = seen[-1] if seen else 0.0

        def on_step_end(self, args, state, control, **kwargs):
            # runs after DefaultFlowCallback has decided whether this step saves
            if control.should_save or state.global_step >= state.max_steps:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            row = state.log_history[-1] if state.log_history else {}
            if len(state.log_history) > self.restored and "num_tokens" in row:
                row["num_tokens"] += self.tokens_before  # a resumed run counts the whole run
            if state.is_world_process_zero:
                write_logs(run_dir, state.log_history, plot=False)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_logs(run_dir, finish_history(state.log_history), plot=True)

    return RunLogCallback()
