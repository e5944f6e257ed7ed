"""Find and load run folders for a report, noting every missing or inconsistent file.

A report argument is either one run folder or any folder above several (an ``eval`` out_dir with
one subfolder per benchmark, an experiment folder with ``eval/<variant>/seed<S>/<bench>/``...).
Evaluation runs are folders holding ``metrics.json`` or ``predictions.jsonl`` (format in
``needlework.records``); training runs are folders holding ``model.json`` (docs/formats.md
§B). We never descend into an evaluation run folder, so lm-eval side outputs are not mistaken
for runs.

A run's variant and seed come from ``run.json`` (``variant``, ``seed``), else from its resolved
``config.yaml``; without a variant (a plain ``needlework eval`` run) its model label stands in for
it. Model labels come from the recorded model, never from folder names: the short id the runner
wrote (run.json ``model``, e.g. ``hf:final``), made longer where two runs recorded different models
(config.yaml ``model`` section) under the same short id, e.g. two ``.../final`` checkpoints.

Loading never guesses a number: a run without ``metrics.json`` is skipped and named in
``Discovery.problems``; a run without usable ``predictions.jsonl`` is kept for its aggregate
metrics but cannot take part in paired comparisons, and that is noted too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from needlework.config import read_yaml, validate
from needlework.errors import UserError, first_line
from needlework.io import iter_jsonl, read_json
from needlework.records import Figure, Metrics, Prediction, RunInfo, TrainedModel

T = TypeVar("T")

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
RUN_INFO = "run.json"
CONFIG = "config.yaml"
MODEL_JSON = "model.json"
PATH_FIELDS = ("path", "adapter", "model", "base_url")
"""Backend fields holding paths/ids, shown by their last components in model labels."""
TRAIN_LOGS = ("train_log.jsonl", "training_log.jsonl", "log_history.jsonl", "loss.jsonl")


@dataclass
class EvalRun:
    """One evaluation run folder: one model on one benchmark (label), one seed of a variant."""

    path: Path
    benchmark: str
    """Registry name from metrics.json (``mdqa``, ``flenqa``, ``general`` ...)."""
    label: str
    """Benchmark label, e.g. ``flenqa_cot``: runs are compared only within one label."""
    model: str
    """Model label: the recorded short id, lengthened where it would be ambiguous."""
    variant: str
    """What is compared: run.json ``variant`` if present, else the model label."""
    seed: str | None
    metrics: Metrics
    info: RunInfo
    predictions: list[Prediction] | None = None
    """None when predictions.jsonl is missing or unreadable (the reason is in problems)."""
    model_spec: Any = None
    """config.yaml ``model`` (the backend unit as run), None when there is no config.yaml."""
    variant_from_model: bool = False
    """No variant recorded: ``variant`` is the model label (and follows it when lengthened)."""
    figures: tuple[Figure, ...] = ()
    """How the benchmark asked to be drawn (metrics.json ``figures``)."""

    @property
    def primary_metric(self) -> str:
        return self.metrics.primary_metric

    @property
    def n(self) -> int | None:
        """Samples scored (metrics.json ``n``, else its primary metric's)."""
        n = self.metrics.n
        return self.metrics.metrics[self.primary_metric].n if n is None else n

    @property
    def name(self) -> str:
        seed = f" seed {self.seed}" if self.seed is not None else ""
        return f"{self.variant}{seed} on {self.label}"


@dataclass
class TrainRun:
    """A training run folder: how to load the result, and the loss log when one is found."""

    path: Path
    model: TrainedModel | None
    """model.json; None when it is unreadable or misshapen."""
    variant: str
    seed: str | None
    loss: list[tuple[float, float]] = field(default_factory=list)
    """(step, loss) pairs; empty when no log was found."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved training config (config.yaml; {} when missing or unreadable)."""


@dataclass
class Discovery:
    runs: list[EvalRun] = field(default_factory=list)
    training: list[TrainRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def discover(paths: list[str | Path]) -> Discovery:
    """Load every run under ``paths`` in argument order; missing arguments are a UserError."""
    found = Discovery()
    for arg in paths:
        root = Path(arg)
        if not root.is_dir():
            raise UserError(f"{root}: not a folder (expected a run folder or a folder of runs)")
        before = len(found.runs) + len(found.training) + len(found.problems)
        for folder in _run_folders(root):
            _load_folder(folder, found)
        if len(found.runs) + len(found.training) + len(found.problems) == before:
            found.problems.append(
                f"{root}: no run folders found (no {METRICS}, {PREDICTIONS} or {MODEL_JSON} "
                "below it)"
            )
    label_models(found.runs)
    _drop_duplicates(found)
    return found


def _run_folders(root: Path) -> list[Path]:
    """Folders that look like runs, depth-first in name order, not descending into runs."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        names, here = set(filenames), Path(dirpath)
        try:  # an eval run that wrote its run.json but no results yet (crashed or running)
            started = RUN_INFO in names and read_json(here / RUN_INFO, RunInfo).benchmark
        except UserError:
            started = None
        if {METRICS, PREDICTIONS} & names or started:
            out.append(here)
            dirnames[:] = []
            continue
        if MODEL_JSON in names:  # a training run may hold its own evaluations below it
            out.append(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return out


def _read(tp: type[T], path: Path, problems: list[str], then: str) -> T | None:
    """The record at ``path``, or None and a problem line (its one-line error, then what
    follows from it) when it is unreadable or misshapen."""
    try:
        return read_json(path, tp)
    except UserError as exc:
        problems.append(f"{exc}; {then}")
        return None


def _load_folder(folder: Path, found: Discovery) -> None:
    info, config, problems = RunInfo(), {}, found.problems
    if (folder / RUN_INFO).is_file():
        info = _read(RunInfo, folder / RUN_INFO, problems, NOT_USED) or info
    if (folder / CONFIG).is_file():
        try:
            config = read_yaml(folder / CONFIG)
        except UserError as exc:
            problems.append(f"{exc}; its variant, seed and model spec are not used")
    # ``variant``/``seed`` from run.json, else from the resolved config.yaml; seed only with a
    # variant (a bare ``seed`` may be a sampling seed, not a training seed)
    tags = {"variant": info.variant, "seed": info.seed} if info.variant is not None else config
    variant = None if tags.get("variant") is None else str(tags["variant"])
    seed = None if variant is None or tags.get("seed") is None else str(tags["seed"])
    if (folder / METRICS).is_file():
        metrics = _read(Metrics, folder / METRICS, problems, "run left out of the report")
        if metrics is None:
            return
        # The runner writes the label (``mdqa_20docs``) as ``benchmark`` and the registry name
        # as ``benchmark_name``; sections are chosen by the registry name, comparisons by the
        # label (in old runs only, the folder name).
        bench = metrics.benchmark_name or metrics.benchmark
        label = metrics.label or (metrics.benchmark if metrics.benchmark_name else None)
        label = label or (folder.name if folder.name.startswith(bench) else bench)
        model = model_id(info.model or metrics.model)
        shown = model if variant is None else variant
        run = EvalRun(folder, bench, label, model, shown, seed, metrics, info)
        run.model_spec, run.variant_from_model = config.get("model"), variant is None
        run.figures, run.predictions = (
            _figures(folder, metrics, problems),
            _predictions(run, problems),
        )
        found.runs.append(run)
    elif (folder / PREDICTIONS).is_file() or info.benchmark is not None:
        have = PREDICTIONS if (folder / PREDICTIONS).is_file() else RUN_INFO
        problems.append(
            f"{folder}: {METRICS} missing (has {have}; the run is unfinished or failed); "
            "run left out of the report"
        )
    else:  # a run without a variant is labelled by the model it wrote, as eval runs are
        trained = _read(
            TrainedModel, folder / MODEL_JSON, problems, "the model is shown as unknown"
        )
        label = model_id(trained and trained.model_dump()) if variant is None else variant
        found.training.append(
            TrainRun(folder, trained, label, seed, _loss(folder, problems), config)
        )


NOT_USED = "its variant, seed and model are not used"


def _figures(folder: Path, metrics: Metrics, problems: list[str]) -> tuple[Figure, ...]:
    """The figures its benchmark declared; a problem line for each that is malformed (left
    out) or when none are recorded (tables only)."""
    path, figures = folder / METRICS, list[Figure]()
    if metrics.figures is None:
        problems.append(
            f"{path}: records no 'figures' (written by an older needlework?); "
            "its runs get tables but no figures"
        )
    for i, item in enumerate(metrics.figures or ()):
        try:
            figures.append(validate(Figure, item, source=str(path), prefix=f"figures.{i}"))
        except UserError as exc:
            problems.append(f"{exc}; that figure is left out")
    return tuple(figures)


def label_models(runs: list[EvalRun]) -> None:
    """Give runs that share a short model id but recorded different models distinct labels.

    The short id (``hf:final``) names only the last folder of a model path, so two checkpoints
    both called ``final`` would merge into one line (or be dropped as duplicates). Those runs get
    the shortest distinguishing part of their recorded config.yaml ``model`` appended, e.g.
    ``hf:final (exp1/final)``; runs whose variant defaults to the model label follow it. Runs
    without a recorded spec keep the short id (there is nothing to tell them apart by).
    """
    by_short: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        fields = _spec_fields(run.model_spec)
        if fields:
            by_short.setdefault(run.model, {})[_identity(fields)] = fields
    renamed: dict[tuple[str, str], str] = {}
    for short, specs in by_short.items():
        if len(specs) > 1:
            for key, label in zip(specs, _distinct(short, list(specs.values()))):
                renamed[(short, key)] = label
    for run in runs:
        new = renamed.get((run.model, _identity(_spec_fields(run.model_spec))))
        if new is None:
            continue
        if run.variant_from_model:
            run.variant = new
        run.model = new


def _spec_fields(spec: Any) -> dict[str, Any]:
    """The fields that make a model what it is: speed-only settings (batch size ...) dropped."""
    from needlework.models.base import answer_fields

    if isinstance(spec, str) and spec:  # the short form ``hf:PATH``
        name, _, target = spec.partition(":")
        return {"name": name, "path": target}
    if not isinstance(spec, dict):
        return {}
    return {k: v for k, v in answer_fields(spec).items() if v is not None}


def _identity(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def _tail(value: str, depth: int | None = None) -> str:
    """The last ``depth`` components of a path or hub id (all of them with None)."""
    parts = [p for p in value.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts[-depth:] if depth else parts)


def _distinct(short: str, specs: list[dict[str, Any]]) -> list[str]:
    """``short (detail)`` per spec: the fields that differ, paths cut to the shortest tail that
    tells them apart; numbered as a last resort (e.g. specs that differ in a ``None`` only)."""
    differ = [
        k
        for k in sorted({k for f in specs for k in f})
        if len({json.dumps(f.get(k), default=str) for f in specs}) > 1
    ]
    longest = max(
        (len(_tail(v).split("/")) for f in specs for k in differ if isinstance(v := f.get(k), str)),
        default=1,
    )
    labels: list[str] = []
    for depth in range(1, longest + 1):
        labels = [_detail(f, differ, depth) for f in specs]
        if len(set(labels)) == len(labels):
            break
    if len(set(labels)) < len(labels):
        labels = [f"{d} #{i}".strip() for i, d in enumerate(labels, 1)]
    return [f"{short} ({d})" for d in labels]


def _detail(fields: dict[str, Any], differ: list[str], depth: int) -> str:
    items = []
    for k in differ:
        v = fields.get(k)
        text = _tail(v, depth) if isinstance(v, str) and k in PATH_FIELDS else str(v)
        items.append(text if k == "path" else f"{k}={text}")
    return ", ".join(items)


def model_id(value: Any) -> str:
    """A short readable model id from metrics.json/run.json (a string or a backend dict)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        backend = value.get("name") or value.get("backend") or "model"
        target = value.get("path") or value.get("model") or "?"
        adapter = value.get("adapter")
        return f"{backend}:{target}" + (f"+{adapter}" if adapter else "")
    return "unknown-model"


def _predictions(run: EvalRun, problems: list[str]) -> list[Prediction] | None:
    path = run.path / PREDICTIONS
    if not path.is_file():
        problems.append(
            f"{run.path}: {PREDICTIONS} missing; its aggregate metrics are shown but it takes "
            "no part in paired deltas or per-sample views"
        )
        return None
    rows: dict[str, Prediction] = {}
    duplicates = 0
    try:
        for lineno, row in iter_jsonl(path):
            pred: Prediction = validate(Prediction, row, source=f"{path}:{lineno}")
            duplicates += pred.id in rows
            rows.setdefault(pred.id, pred)
    except UserError as exc:
        problems.append(f"{exc}; predictions of this run ignored")
        return None
    if duplicates:
        problems.append(f"{path}: {duplicates} repeated sample ids (kept the first of each)")
    # a suite (metrics.json ``tasks``) counts requests, not predictions.jsonl rows
    if run.n is not None and run.n != len(rows) and not run.metrics.tasks:
        problems.append(
            f"{run.path}: {METRICS} says n={run.n} but {PREDICTIONS} has {len(rows)} samples "
            "(metrics written before the run finished?)"
        )
    return list(rows.values())


def _drop_duplicates(found: Discovery) -> None:
    """Two runs for the same variant, seed and label: keep the first given, say so."""
    kept: dict[tuple[str, str | None, str], EvalRun] = {}
    for run in found.runs:
        first = kept.setdefault((run.variant, run.seed, run.label), run)
        if first is not run:
            found.problems.append(
                f"{run.path}: same variant/seed/benchmark as {first.path} "
                f"({run.name}); kept the first, left this one out"
            )
    found.runs = list(kept.values())


def _loss(folder: Path, problems: list[str]) -> list[tuple[float, float]]:
    """(step, loss) from a JSONL log or the newest HF ``trainer_state.json`` in the folder; a
    log that is there but unreadable is a problem line."""
    for name in TRAIN_LOGS:
        if (folder / name).is_file():
            try:  # rows without a loss are valid (a run too short to log one has its summary)
                return _steps_and_losses([row for _, row in iter_jsonl(folder / name)])
            except UserError as exc:
                problems.append(f"{first_line(exc)}; no loss curve for {folder}")
                return []
    states = sorted(folder.glob("**/trainer_state.json"), key=_checkpoint_step)
    for path in reversed(states):
        state = _read(dict, path, problems, "no loss curve from it")
        if state and isinstance(state.get("log_history"), list):
            return _steps_and_losses(state["log_history"])
    return []


def _checkpoint_step(path: Path) -> tuple[int, str]:
    match = re.search(r"checkpoint-(\d+)", str(path))
    # The top-level trainer_state.json (no checkpoint number) is the final one.
    return (int(match.group(1)) if match else 1 << 62, str(path))


def _steps_and_losses(rows: list[Any]) -> list[tuple[float, float]]:
    num = (int, float)
    return [
        (float(r["step"]), float(r["loss"]))
        for r in rows
        if isinstance(r, dict) and isinstance(r.get("step"), num) and isinstance(r.get("loss"), num)
    ]
