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
from typing import Any

import yaml

from needlework.errors import DataError, UserError, first_line
from needlework.io import read_jsonl
from needlework.records import Figure, Prediction

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
RUN_INFO = "run.json"
CONFIG = "config.yaml"
MODEL_JSON = "model.json"
DEFAULT_RANK = 100
"""Report rank of a benchmark that declares none."""
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
    primary_metric: str
    metrics: dict[str, Any]
    info: dict[str, Any]
    predictions: list[dict[str, Any]] | None = None
    """None when predictions.jsonl is missing or unreadable (the reason is in problems)."""
    model_spec: Any = None
    """config.yaml ``model`` (the backend unit as run), None when there is no config.yaml."""
    variant_from_model: bool = False
    """No variant recorded: ``variant`` is the model label (and follows it when lengthened)."""
    figures: tuple[Figure, ...] = ()
    """How the benchmark asked to be drawn (metrics.json ``figures``)."""
    rank: int = DEFAULT_RANK
    """Where its sections go (metrics.json ``report_rank``), lowest first."""

    @property
    def name(self) -> str:
        seed = f" seed {self.seed}" if self.seed is not None else ""
        return f"{self.variant}{seed} on {self.label}"


@dataclass
class TrainRun:
    """A training run folder: how to load the result, and the loss log when one is found."""

    path: Path
    model: dict[str, Any]
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
        names = set(filenames)
        here = Path(dirpath)
        if {METRICS, PREDICTIONS} & names or _is_empty_eval_run(here, names):
            out.append(here)
            dirnames[:] = []
            continue
        if MODEL_JSON in names:
            # A training run may hold its own evaluations below it, so keep descending.
            out.append(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return out


def _is_empty_eval_run(folder: Path, names: set[str]) -> bool:
    """An eval run that wrote its run.json but no results yet (crashed or still running)."""
    if RUN_INFO not in names:
        return False
    info = _read_json(folder / RUN_INFO, problems=None)
    return isinstance(info, dict) and "benchmark" in info


def _read_json(path: Path, problems: list[str] | None) -> Any:
    """The parsed file, or None (and a problem line) when it cannot be read, is not UTF-8 text
    or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        if problems is not None:
            problems.append(f"{path}: unreadable JSON ({_why(exc)})")
        return None


def _why(exc: BaseException) -> str:
    """A one-line reason for an unreadable file (undecodable bytes said as such)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return first_line(exc)


def _load_folder(folder: Path, found: Discovery) -> None:
    info = {}
    if (folder / RUN_INFO).is_file():
        loaded = _read_json(folder / RUN_INFO, found.problems)
        if isinstance(loaded, dict):
            info = loaded
        elif loaded is not None:
            found.problems.append(
                f"{folder / RUN_INFO}: expected a JSON object, got {type(loaded).__name__}; "
                "its variant, seed and model are not used"
            )
    if (folder / METRICS).is_file():
        run = _load_eval(folder, info, found.problems)
        if run is not None:
            found.runs.append(run)
    elif (folder / PREDICTIONS).is_file() or "benchmark" in info:
        have = PREDICTIONS if (folder / PREDICTIONS).is_file() else RUN_INFO
        found.problems.append(
            f"{folder}: {METRICS} missing (has {have}; the run is unfinished or failed); "
            "run left out of the report"
        )
    else:
        found.training.append(_load_train(folder, info, found.problems))


def _load_eval(folder: Path, info: dict[str, Any], problems: list[str]) -> EvalRun | None:
    metrics = _read_json(folder / METRICS, problems)
    if metrics is None:
        problems.append(f"{folder}: run left out of the report ({METRICS} unreadable)")
        return None
    why = _check_metrics(metrics)
    if why:
        problems.append(f"{folder / METRICS}: {why}; run left out of the report")
        return None
    # The runner writes the label (``mdqa_20docs``) as ``benchmark`` and the registry name as
    # ``benchmark_name``; sections are chosen by the registry name, comparisons by the label.
    bench = metrics.get("benchmark_name") or metrics["benchmark"]
    label = metrics.get("label") or info.get("benchmark_label")
    if not isinstance(label, str):
        label = metrics["benchmark"] if metrics.get("benchmark_name") else None
    if not isinstance(label, str):
        # Old runs only (the runner records the label in metrics.json): the folder name.
        label = folder.name if folder.name.startswith(bench) else bench
    config = _read_config(folder, problems)
    model = model_id(info.get("model", metrics.get("model")))
    variant, seed = _variant_and_seed(info, config)
    run = EvalRun(
        path=folder,
        benchmark=bench,
        label=label,
        model=model,
        variant=str(variant) if variant is not None else model,
        seed=str(seed) if seed is not None else None,
        primary_metric=metrics["primary_metric"],
        metrics=metrics,
        info=info,
        model_spec=config.get("model"),
        variant_from_model=variant is None,
    )
    run.figures, run.rank = _declaration(folder / METRICS, metrics, problems)
    run.predictions = _load_predictions(folder, run, problems)
    return run


def _declaration(
    path: Path, metrics: dict[str, Any], problems: list[str]
) -> tuple[tuple[Figure, ...], int]:
    """The benchmark's figures and report rank from metrics.json; a problem line (and tables
    only) when they are missing or malformed."""
    raw, rank = metrics.get("figures"), metrics.get("report_rank", DEFAULT_RANK)
    if raw is None:
        problems.append(
            f"{path}: records no 'figures' (written by an older needlework?); "
            "its runs get tables but no figures"
        )
        return (), DEFAULT_RANK
    figures = []
    for i, item in enumerate(raw if isinstance(raw, list) else [raw]):
        try:
            figures.append(Figure.from_json(item))
        except ValueError as exc:
            problems.append(f"{path}: figures[{i}]: {exc}; that figure is left out")
    if not isinstance(rank, int) or isinstance(rank, bool):
        problems.append(f"{path}: 'report_rank' should be an integer, got {rank!r}")
        rank = DEFAULT_RANK
    return tuple(figures), rank


def _read_config(folder: Path, problems: list[str]) -> dict[str, Any]:
    """The run's resolved config.yaml ({} when missing or unreadable; a problem line when it
    is there but cannot be read)."""
    path = folder / CONFIG
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
        problems.append(
            f"{path}: unreadable YAML ({_why(exc)}); its variant, seed and model spec are not used"
        )
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _variant_and_seed(info: dict[str, Any], config: dict[str, Any]) -> tuple[Any, Any]:
    """``variant``/``seed`` from run.json, else from the resolved config.yaml; seed only with a
    variant (a bare ``seed`` may be a sampling seed, not a training seed)."""
    source = info if info.get("variant") is not None else config
    variant = source.get("variant")
    return variant, (source.get("seed") if variant is not None else None)


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


def _check_metrics(metrics: Any) -> str | None:
    if not isinstance(metrics, dict):
        return "expected a JSON object"
    for key, kind in (("benchmark", str), ("primary_metric", str), ("metrics", dict)):
        if not isinstance(metrics.get(key), kind):
            return f"field '{key}' missing or not a {kind.__name__}"
    primary = metrics["primary_metric"]
    stat = metrics["metrics"].get(primary)
    if not isinstance(stat, dict) or not isinstance(stat.get("mean"), (int, float)):
        return f"metrics['{primary}'] (the primary metric) missing or without a 'mean'"
    for name, other in metrics["metrics"].items():
        if not isinstance(other, dict) or not isinstance(other.get("mean"), (int, float)):
            return f"metrics['{name}'] should be an object with a numeric 'mean'"
    secondary = metrics.get("secondary_metrics") or []
    if not isinstance(secondary, list) or not all(isinstance(m, str) for m in secondary):
        return "field 'secondary_metrics' should be a list of metric names"
    return _check_by(metrics.get("by", {})) or _check_tasks(metrics.get("tasks", {}))


def _check_by(by: Any) -> str | None:
    """``by``: {field: {key: {metric: stat}}} (an object of objects)."""
    if not isinstance(by, dict):
        return f"field 'by' should be a JSON object of breakdowns, got {_kind(by)}"
    for name, groups in by.items():
        if not isinstance(groups, dict):
            return f"by['{name}'] should be a JSON object (key -> scores), got {_kind(groups)}"
    return None


def _check_tasks(tasks: Any) -> str | None:
    """``tasks`` (a general suite): {task: {"primary_metric": str, ...}}."""
    if not isinstance(tasks, dict):
        return f"field 'tasks' should be a JSON object of tasks, got {_kind(tasks)}"
    for name, task in tasks.items():
        if not isinstance(task, dict):
            return f"tasks['{name}'] should be a JSON object, got {_kind(task)}"
        if not isinstance(task.get("primary_metric", ""), str):
            return f"tasks['{name}']['primary_metric'] should be a string"
    return None


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error lines."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


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


def _load_predictions(
    folder: Path, run: EvalRun, problems: list[str]
) -> list[dict[str, Any]] | None:
    path = folder / PREDICTIONS
    if not path.is_file():
        problems.append(
            f"{folder}: {PREDICTIONS} missing; its aggregate metrics are shown but it takes "
            "no part in paired deltas or per-sample views"
        )
        return None
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates = 0
    try:
        for lineno, row in enumerate(read_jsonl(path), 1):
            Prediction.check(row, f"{path}:{lineno}", need_hash=False)
            if row["id"] in seen:
                duplicates += 1
                continue
            seen.add(row["id"])
            rows.append(row)
    except DataError as exc:
        problems.append(f"{exc}; predictions of this run ignored")
        return None
    if duplicates:
        problems.append(f"{path}: {duplicates} repeated sample ids (kept the first of each)")
    n = run.metrics.get("n", run.metrics["metrics"][run.primary_metric].get("n"))
    # a suite (metrics.json ``tasks``) counts requests, not predictions.jsonl rows
    if isinstance(n, int) and n != len(rows) and "tasks" not in run.metrics:
        problems.append(
            f"{folder}: {METRICS} says n={n} but {PREDICTIONS} has {len(rows)} samples "
            "(metrics written before the run finished?)"
        )
    return rows


def _drop_duplicates(found: Discovery) -> None:
    """Two runs for the same variant, seed and label: keep the first given, say so."""
    kept: dict[tuple[str, str | None, str], EvalRun] = {}
    runs = []
    for run in found.runs:
        key = (run.variant, run.seed, run.label)
        if key in kept:
            found.problems.append(
                f"{run.path}: same variant/seed/benchmark as {kept[key].path} "
                f"({run.name}); kept the first, left this one out"
            )
            continue
        kept[key] = run
        runs.append(run)
    found.runs = runs


def _load_train(folder: Path, info: dict[str, Any], problems: list[str]) -> TrainRun:
    model = _read_json(folder / MODEL_JSON, problems)
    if model is not None and not (
        isinstance(model, dict) and isinstance(model.get("backend") or model.get("name"), str)
    ):
        problems.append(
            f"{folder / MODEL_JSON}: expected a JSON object with 'backend' (docs/formats.md §B), "
            f"got {'one without it' if isinstance(model, dict) else _kind(model)}; "
            "the model is shown as unknown"
        )
    if not isinstance(model, dict):
        model = {}
    config = _read_config(folder, problems)
    # config.yaml ``variant``/``seed`` (``needlework run`` records them); a run without a
    # variant is labelled by the model it wrote, as plain eval runs are
    variant, seed = _variant_and_seed(info, config)
    run = TrainRun(
        path=folder,
        model=model,
        variant=str(variant) if variant is not None else model_id(model or None),
        seed=str(seed) if seed is not None else None,
        config=config,
    )
    run.loss = _loss_log(folder, problems)
    return run


def _loss_log(folder: Path, problems: list[str]) -> list[tuple[float, float]]:
    """(step, loss) from a JSONL log or the newest HF ``trainer_state.json`` in the folder; a
    log that is there but unreadable is a problem line."""
    for name in TRAIN_LOGS:
        path = folder / name
        if path.is_file():
            try:
                rows = list(read_jsonl(path))
            except DataError as exc:
                problems.append(f"{first_line(exc)}; no loss curve for {folder}")
                return []
            # rows without a loss are valid (a run too short to log one has only its summary)
            return _steps_and_losses(rows)
    states = sorted(folder.glob("**/trainer_state.json"), key=_checkpoint_step)
    for path in reversed(states):
        state = _read_json(path, problems)
        if isinstance(state, dict) and isinstance(state.get("log_history"), list):
            return _steps_and_losses(state["log_history"])
    return []


def _checkpoint_step(path: Path) -> tuple[int, str]:
    match = re.search(r"checkpoint-(\d+)", str(path))
    # The top-level trainer_state.json (no checkpoint number) is the final one.
    return (int(match.group(1)) if match else 1 << 62, str(path))


def _steps_and_losses(rows: list[Any]) -> list[tuple[float, float]]:
    out = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        step, loss = row.get("step"), row.get("loss")
        if isinstance(step, (int, float)) and isinstance(loss, (int, float)):
            out.append((float(step), float(loss)))
    return out
