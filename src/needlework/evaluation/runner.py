"""One runner for every benchmark and backend: samples -> predictions.jsonl -> metrics.json.

Run:  needlework eval --config configs/eval/mdqa_20docs.yaml
      needlework eval --model hf:./model --benchmark mdqa --benchmark niah --limit 20

Each benchmark gets a run folder ``<out_dir>/<benchmark.label()>/`` in the records.py format.
Predictions are appended and flushed as batches/requests finish, so a crash loses nothing that
was finished; running the same command again resumes, skipping samples already predicted (their
``prompt_sha256`` must match, else it stops: the data or prompt changed). When every sample is
done, predictions.jsonl is rewritten in the benchmark's sample order (same bytes whatever the
interruptions, batching or concurrency) and metrics.json is written: the mean of every score
with a 95% CI and its count, overall and per value of each ``benchmark.group_by`` field.

A prompt longer than the model's context is never truncated. ``on_too_long: error`` (default)
stops with a line naming the sample; ``skip`` records it in predictions.jsonl with
``"skipped": "<why>"`` and ``output: null``, leaves it out of the metrics and counts it in
``metrics.json`` (``n_skipped``) — the Lost-in-the-Middle scripts drop such prompts the same way.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import io
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from needlework import registry
from needlework.config import PositiveInt, config, read_yaml, validate
from needlework.errors import DataError, UserError
from needlework.evaluation import parallel
from needlework.evaluation.base import Benchmark, answer_budget, report_declaration
from needlework.io import (
    dumps,
    ensure_writable_dir,
    exclusive_lock,
    parse_jsonl_lines,
    sha256_text,
    write_json,
    write_jsonl,
)
from needlework.models.base import ChatModel, PromptTooLongError, answer_fields
from needlework.records import Prediction, Sample
from needlework.runinfo import update_run_info

log = logging.getLogger(__name__)

# Rows a rerun with a smaller --limit left out of predictions.jsonl, kept for a larger rerun.
BEYOND_LIMIT = "predictions.beyond_limit.jsonl"


@config
class EvalConfig:
    """``needlework eval``: one model on one or more benchmarks."""

    model: Annotated[ChatModel, registry.backends] | None = None
    """The model: a backend unit (``name: hf`` plus its fields; see ``needlework ls``); none
    for a ``gold_answers`` run."""
    benchmarks: Annotated[
        tuple[Annotated[Benchmark, registry.benchmarks], ...],
        Field(min_length=1, validate_default=True),
    ] = ()
    """Benchmark units; each gets its own run folder named by its label. One sized in the
    model's tokens (``needs_token_counter``) with no ``tokenizer`` gets the model's."""
    gold_answers: bool = False
    """The oracle run: answer every sample with its first accepted answer, no model asked, so
    each primary metric should read 1.0 (an end-to-end check of data, prompts and scorers)."""
    out_dir: Path | None = None
    """Folder holding one run folder per benchmark; None: runs/<time>-<benchmarks>-<model>."""
    limit: PositiveInt | None = None
    """Only the first N samples of each benchmark (quick dry runs); None: all."""
    max_new_tokens: PositiveInt | None = None
    """Override every benchmark's answer budget; None keeps each benchmark's own."""
    on_too_long: Literal["error", "skip"] = "error"
    """A prompt over the model's context: stop (error) or record it as skipped (skip)."""
    variant: str | None = None
    """Label that reports compare by (e.g. ``base``, ``ft_template``); None: the model id."""
    seed: int | None = None
    """Training seed of this model, so reports average a variant's seeds with their spread."""
    store_prompts: bool = True
    """Keep each sample's prompt turns in predictions.jsonl (the HTML report shows what the
    model saw); false keeps only their sha256 (smaller files for long prompts)."""

    @field_validator("benchmarks")
    @classmethod
    def _hand_over_tokenizer(cls, benches: tuple[Any, ...], info: ValidationInfo) -> Any:
        model = info.data.get("model")
        own = model.token_counter() if model is not None else None
        return tuple(
            dataclasses.replace(b, tokenizer=own)
            if own is not None and b.needs_token_counter and getattr(b, "tokenizer", "") is None
            else b
            for b in benches
        )

    def __post_init__(self) -> None:
        if (self.model is None) != self.gold_answers:
            raise ValueError(
                "model: no model given (--model hf:./model, or a 'model:' section); "
                "gold_answers: true is the oracle run, which needs none"
                if self.model is None
                else "model: a gold_answers run asks no model; remove one of the two"
            )
        suites = [b.label() for b in self.benchmarks if is_suite(b)]
        if self.gold_answers and suites:
            raise ValueError(
                f"gold_answers: {', '.join(suites)} is scored by lm-eval, which has no oracle "
                "run; evaluate a model on it"
            )
        labels = [b.label() for b in self.benchmarks]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(
                f"benchmarks: two benchmarks share the run-folder label "
                f"{', '.join(dupes)}; give one a different variant"
            )


def evaluate(cfg: EvalConfig, *, progress: bool = True) -> list[Path]:
    """Run every benchmark of ``cfg``; returns the run folders (one per benchmark)."""
    root = Path(cfg.out_dir) if cfg.out_dir is not None else default_out_dir(cfg)
    paths = []
    for bench in cfg.benchmarks:
        run_cfg = dataclasses.replace(cfg, benchmarks=(bench,), out_dir=root)
        run_dir = root / bench.label()
        if is_suite(bench):
            _run_suite(run_cfg, bench, run_dir)
        else:
            run_benchmark(run_cfg, bench, run_dir, progress=progress)
        paths.append(run_dir)
    return paths


def is_suite(bench: Any) -> bool:
    """A suite (registered beside the benchmarks) runs and scores itself."""
    return callable(getattr(bench, "run_suite", None))


def default_out_dir(cfg: EvalConfig, now: dt.datetime | None = None) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<labels>-<model>`` (filesystem-safe)."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    labels = "+".join(b.label() for b in cfg.benchmarks)
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{stamp}-{labels}-{model_id(cfg)}")
    return Path("runs") / name.strip("_")[:150]


GOLD = "gold-answers"


def model_id(cfg: EvalConfig) -> str:
    """The model's id in records and reports (``gold-answers`` for the oracle run)."""
    return cfg.model.describe() if cfg.model is not None else GOLD


def prompt_sha256(sample: Sample) -> str:
    """Hash of the exact chat turns (role + content), independent of any chat template."""
    return sha256_text(
        dumps([{"role": m["role"], "content": m["content"]} for m in sample.messages])
    )


# -- one benchmark ---------------------------------------------------------------------------
def run_benchmark(
    cfg: EvalConfig, bench: Benchmark, run_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Predict every pending sample of ``bench`` into ``run_dir``; returns the metrics.

    The folder is claimed with a lock first, so a second eval into it stops at once instead of
    sending every request again (a worker of a multi-process run claims its own rank).
    The samples are built before the folder exists (missing data fails with nothing written),
    and a folder this call created is removed again when it fails before any prediction (a
    missing key or model leaves no empty run behind)."""
    worker = parallel.current()
    report_declaration(bench)  # a broken figure declaration fails here, before any request
    samples = select_samples(bench, cfg.limit)
    # a worker's claim lives with its shard, so it goes when rank 0 merges the shards
    lock = (
        run_dir / ".lock"
        if worker.is_main
        else worker.shard(run_dir).parent / f".lock-r{worker.rank}"
    )
    busy = (
        f"{run_dir}: another needlework eval is running this benchmark into the same folder; "
        "wait for it to finish (a rerun then resumes) or choose another out_dir"
    )
    with _new_run_folder(run_dir, worker.is_main):
        lock.parent.mkdir(exist_ok=True)
        with exclusive_lock(lock, busy=busy):
            return _run_benchmark(cfg, bench, run_dir, samples, worker, progress=progress)


@contextlib.contextmanager
def _new_run_folder(run_dir: Path, owner: bool) -> Iterator[None]:
    """Create ``run_dir`` for the block; if the block fails before any prediction exists and
    this call created the folder, remove it again (and its parent, when that is new and empty)."""
    made = [p for p in (run_dir.parent, run_dir) if not p.exists()]
    ensure_writable_dir(run_dir)
    try:
        yield
    except BaseException:
        if made and owner and not _has_predictions(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            if run_dir.parent in made:
                with contextlib.suppress(OSError):
                    run_dir.parent.rmdir()  # only when empty
        raise


_RECORD_ONLY = {"config.yaml", "run.json", ".lock"}


def _has_predictions(run_dir: Path) -> bool:
    """Any work in the folder beyond its records (predictions, shards, a suite's caches)."""
    return any(
        p.is_file() and p.name not in _RECORD_ONLY and p.stat().st_size > 0 and not _empty_db(p)
        for p in run_dir.rglob("*")
    )


def _empty_db(path: Path) -> bool:
    """An SQLite request cache (lm-eval's) that was opened but holds no row."""
    if path.suffix != ".db":
        return False
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            query = "SELECT name FROM sqlite_master WHERE type='table'"
            tables = [r[0] for r in db.execute(query)]
            rows = (db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)
            return all(r is None for r in rows)
    except sqlite3.Error:
        return False


def _run_benchmark(
    cfg: EvalConfig,
    bench: Benchmark,
    run_dir: Path,
    samples: list[Sample],
    worker: parallel.Worker,
    *,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    changed = check_resumable(run_dir, cfg)
    hashes = {s.id: prompt_sha256(s) for s in samples}
    pred_path = run_dir / "predictions.jsonl"
    own_path = worker.shard(run_dir) if worker.world > 1 else pred_path
    if worker.world > 1:
        own_path.parent.mkdir(parents=True, exist_ok=True)
        load_predictions(own_path)  # trims this worker's own line cut short by a crash
    done = {i: r for i, r in _saved_rows(run_dir).items() if not r.get("skipped")}
    for s in samples:
        if s.id in done and done[s.id].get("prompt_sha256") != hashes[s.id]:
            raise UserError(
                f"{pred_path}: the saved prediction for sample '{s.id}' was made "
                f"from a different prompt (prompt_sha256 differs): the benchmark "
                f"data or prompt changed; use another out_dir"
            )
    finished = _finished_metrics(run_dir, cfg, samples, done)
    if finished is not None:  # a rerun of a finished benchmark leaves its record untouched
        if worker.is_main:
            msg = f"{bench.label()}: already complete in {run_dir}; nothing run or rewritten"
            if progress:
                print(msg, file=sys.stderr)
            else:
                log.info(msg)
        return finished if worker.is_main else {}
    mine = [s for k, s in enumerate(samples) if worker.owns(k)]
    pending = [s for s in mine if s.id not in done]
    model = cfg.model
    count = model.count_tokens if model is not None else len
    max_new = cfg.max_new_tokens or bench.max_new_tokens or answer_budget(samples, count)
    usage_before = _usage(model)
    info = {
        "model": model_id(cfg),
        "benchmark": bench.label(),
        "benchmark_name": _unit_name(bench),
        "num_samples": len(samples),
        "resumed_with": len(samples) - sum(1 for s in samples if s.id not in done),
        "max_new_tokens": max_new,
        "workers": worker.world,
        **({"model_changed_on_resume": changed} if changed else {}),
        "status": "running",
        **_tags(cfg),
    }
    from needlework.runinfo import now, write_run_info

    if worker.is_main:
        write_run_info(run_dir, cfg, **info)
    start = time.monotonic()
    try:
        with (
            _Writer(own_path, bench.label(), hashes, cfg.store_prompts) as writer,
            tqdm(
                total=len(mine),
                initial=len(mine) - len(pending),
                desc=bench.label() + (f" [worker {worker.rank}]" if worker.world > 1 else ""),
                unit="sample",
                disable=not progress,
                dynamic_ncols=True,
                position=worker.rank,
            ) as bar,
        ):
            _predict(model, bench, pending, max_new, cfg.on_too_long, writer, bar)
    except BaseException as exc:
        if worker.is_main:
            update_run_info(
                run_dir,
                status="interrupted",
                error=f"{type(exc).__name__}: {exc}"[:500],
                elapsed_s=round(time.monotonic() - start, 3),
                usage=_usage_delta(usage_before, _usage(model)),
            )
        raise
    if not worker.is_main:
        return {}
    if worker.world > 1:
        rows = parallel.wait_for_all(run_dir, list(hashes), lambda: _saved_rows(run_dir))
    else:
        rows = _saved_rows(run_dir)  # with the shards of an earlier multi-worker attempt
    missing = [s.id for s in samples if s.id not in rows]
    if missing:  # a backend that silently dropped samples: a bug, never a smaller benchmark
        raise RuntimeError(
            f"{model_id(cfg)} returned no output for {len(missing)} samples (first: {missing[0]!r})"
        )
    ordered = [rows[s.id] for s in samples]
    # Rows beyond a smaller --limit: kept aside for a later larger run, out of this run's record
    # (predictions.jsonl holds exactly the samples metrics.json counts).
    extra = [r for i, r in rows.items() if i not in hashes]
    write_jsonl(pred_path, ordered)
    aside = run_dir / BEYOND_LIMIT
    if extra:
        write_jsonl(aside, extra)
    elif aside.exists():
        aside.unlink()
    shutil.rmtree(run_dir / parallel.SHARDS, ignore_errors=True)  # merged into pred_path now
    metrics = aggregate(ordered, bench, model_id(cfg))
    write_json(run_dir / "metrics.json", metrics)
    update_run_info(
        run_dir,
        status="complete",
        finished=now(),
        elapsed_s=round(time.monotonic() - start, 3),
        usage=_usage_delta(usage_before, _usage(model)),
        n_skipped=metrics["n_skipped"],
        model_provenance=model.provenance() if model is not None else None,
    )
    return metrics


def _finished_metrics(
    run_dir: Path, cfg: EvalConfig, samples: list[Sample], done: Mapping[str, Any]
) -> dict[str, Any] | None:
    """metrics.json when ``run_dir`` already holds this exact finished run, else None.

    Finished: run.json says complete for the same number of samples and the same variant/seed
    tags, metrics.json is readable and every sample has a prediction (a skip counts when
    ``on_too_long`` is skip, so retrying it would only skip it again). Rewriting such a run
    would only replace its timings (``started``, ``elapsed_s``) with those of a no-op.
    """
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not UTF-8 or not JSON: not a finished run
        return None
    if not isinstance(info, dict) or not isinstance(metrics, dict):
        return None
    if info.get("status") != "complete" or info.get("num_samples") != len(samples):
        return None
    if any(info.get(k) != v for k, v in _tags(cfg).items()):
        return None
    missing = {s.id for s in samples if s.id not in done}
    if missing and cfg.on_too_long == "skip":
        missing -= {i for i, r in _saved_rows(run_dir).items() if r.get("skipped")}
    return None if missing else metrics


def _saved_rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every complete prediction in the run folder: predictions.jsonl, then each worker's shard
    (rows of a run interrupted with any number of workers count as done)."""
    rows = load_predictions(run_dir / BEYOND_LIMIT, trim=False)
    rows.update(load_predictions(run_dir / "predictions.jsonl"))
    for shard in parallel.shard_files(run_dir):
        rows.update(load_predictions(shard, trim=False))
    return rows


def select_samples(bench: Benchmark, limit: int | None) -> list[Sample]:
    """The first ``limit`` samples, checked: at least one, with unique ids (for resuming)."""
    out = list(itertools.islice(bench.samples(), limit))
    ids = [s.id for s in out]
    dupe = next((i for i, n in collections.Counter(ids).items() if n > 1), None)
    if not out or dupe is not None:
        what = f"duplicate sample id {dupe!r} (ids must be unique)" if dupe else "no samples"
        raise DataError(f"{bench.label()}: the benchmark produced {what}")
    return out


def _predict(
    model: ChatModel | None,
    bench: Benchmark,
    pending: list[Sample],
    max_new: int,
    on_too_long: str,
    writer: _Writer,
    bar: Any,
) -> None:
    """Generate, score and save every pending sample; too-long prompts per ``on_too_long``."""
    scorer = f"{bench.label()}: score()"
    while pending:
        try:
            for sample, output in _stream(model, pending, max_new):
                scores: dict[str, float] = validate(
                    _SCORES, bench.score(sample, output), source=scorer
                )
                writer.write(sample, output, scores, None)
                bar.update(1)
            return
        except PromptTooLongError as exc:
            ids = [pending[i].id for i, _ in exc.items]
            if on_too_long == "error":
                more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
                raise UserError(
                    f"{bench.label()}: {exc.describe_item(0, f'sample {ids[0]!r}')}{more}; "
                    f"set on_too_long=skip to record such samples as skipped"
                ) from None
            for k, (i, _) in enumerate(exc.items):
                why = exc.describe_item(k, f"sample {pending[i].id!r}")
                writer.write(pending[i], None, {}, why)
                bar.update(1)
            pending = [s for s in pending if s.id not in writer.written]


def _stream(
    model: ChatModel | None, samples: list[Sample], max_new: int
) -> Iterator[tuple[Sample, str]]:
    """``(sample, output)`` as the backend finishes them; without a model (the oracle run)
    each sample's first accepted answer. A model never sees the answers."""
    if model is None:
        yield from ((s, s.answers[0] if s.answers else "") for s in samples)
        return
    convs = [list(s.messages) for s in samples]
    for i, text in model.generate_iter(convs, max_new_tokens=max_new):
        yield samples[i], text


_SCORES = Annotated[dict[str, float], Field(min_length=1)]


class _Writer:
    """Appends prediction lines, flushed at once and fsynced at least every second."""

    def __init__(
        self, path: Path, label: str, hashes: Mapping[str, str], store_prompts: bool = True
    ):
        self.path, self.label, self.hashes = path, label, hashes
        self.store_prompts = store_prompts
        self.written: set[str] = set()
        self._last_sync = time.monotonic()

    def __enter__(self) -> _Writer:
        self.fh = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def write(
        self, sample: Sample, output: str | None, scores: dict[str, float], skipped: str | None
    ) -> None:
        """One prediction line (a skipped sample: no output, no scores, and why)."""
        row = Prediction(
            id=sample.id,
            benchmark=self.label,
            prompt_sha256=self.hashes[sample.id],
            output=output,
            scores=scores,
            answers=tuple(sample.answers),
            meta=sample.meta,
            messages=sample.messages if self.store_prompts else (),
            skipped=skipped,
        ).to_json()
        self.fh.write(dumps(row) + "\n")
        self.fh.flush()
        self.written.add(row["id"])
        if time.monotonic() - self._last_sync > 1.0:
            os.fsync(self.fh.fileno())
            self._last_sync = time.monotonic()


def load_predictions(path: Path, *, trim: bool = True) -> dict[str, dict[str, Any]]:
    """Saved predictions by id (a later line for the same id wins: a retried skip).

    A last line cut short by a crash mid-write is dropped (with a warning) and, with ``trim``,
    trimmed from the file, so the run can append again; any other bad line is an error naming
    file and line. ``trim=False`` reads another worker's shard that may be mid-append.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # len(data) unless the last line is incomplete
    if keep < len(data) and trim:
        log.warning(
            "%s: dropping an incomplete last line (%d bytes) left by an interrupted run",
            path,
            len(data) - keep,
        )
        with path.open("r+b") as fh:
            fh.truncate(keep)
    lines = io.TextIOWrapper(io.BytesIO(data[:keep]), encoding="utf-8")  # decoded as read
    rows: dict[str, dict[str, Any]] = {}
    for n, row in parse_jsonl_lines(lines, str(path)):
        validate(Prediction, row, source=f"{path}:{n}")
        rows[row["id"]] = row
    return rows


def check_resumable(run_dir: Path, cfg: EvalConfig) -> dict[str, list[Any]]:
    """A run folder may only be resumed by the same model and benchmark config; returns the
    speed-only model fields that changed (``{field: [before, now]}``, e.g. the endpoint)."""
    from needlework.config import to_dict

    old_path = run_dir / "config.yaml"
    if not old_path.is_file():
        return {}
    old = read_yaml(old_path)
    new = to_dict(cfg)
    before: dict[str, Any] = old["model"] if isinstance(old.get("model"), dict) else {}
    pairs = [
        ("model", answer_fields(before), answer_fields(new["model"] or {})),
        ("gold_answers", bool(old.get("gold_answers")), new["gold_answers"]),
        ("benchmarks", old.get("benchmarks"), new["benchmarks"]),
        ("max_new_tokens", old.get("max_new_tokens"), new["max_new_tokens"]),
    ]
    for key, a, b in pairs:
        if a != b:
            raise UserError(
                f"{run_dir}: holds a run with a different {key} ({_short(a)} vs "
                f"now {_short(b)}); resume with the same settings or use another "
                f"out_dir"
            )
    return {
        k: [before.get(k), v]
        for k, v in (new["model"] or {}).items()
        if k in before and before[k] != v and k != "name"
    }


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def aggregate(rows: Iterable[Mapping[str, Any]], bench: Benchmark, model: str) -> dict[str, Any]:
    """metrics.json content for ``bench`` (see :func:`stats.aggregate_predictions`)."""
    from needlework.stats import aggregate_predictions

    return {
        "benchmark": bench.label(),
        "benchmark_name": _unit_name(bench),
        "model": model,
        **aggregate_predictions(rows, group_by=bench.group_by, primary_metric=bench.primary_metric),
        "secondary_metrics": list(bench.secondary_metrics),
        **report_declaration(bench),
    }


# -- helpers ---------------------------------------------------------------------------------
def _unit_name(unit: Any) -> str:
    """The name a unit is registered under (its class name if unregistered)."""
    return getattr(type(unit), "registry_name", type(unit).__name__)


def _tags(cfg: EvalConfig) -> dict[str, Any]:
    """run.json fields reports group by (only those set)."""
    return {k: v for k, v in (("variant", cfg.variant), ("seed", cfg.seed)) if v is not None}


def _usage(model: ChatModel | None) -> dict[str, int]:
    return dict(model.usage()) if model is not None else {}


def _usage_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, (int, float))}


def _run_suite(cfg: EvalConfig, bench: Any, run_dir: Path) -> dict[str, Any]:
    """Delegate a whole suite (lm-eval ``general``) that runs and scores itself; what it needs
    (``preflight``) is checked before its folder is made."""
    from needlework.runinfo import now, write_run_info

    assert cfg.model is not None  # EvalConfig refuses gold_answers with a suite
    changed = check_resumable(run_dir, cfg)
    if hasattr(bench, "preflight"):
        bench.preflight(cfg.model)
    with _new_run_folder(run_dir, True):
        write_run_info(
            run_dir,
            cfg,
            model=cfg.model.describe(),
            benchmark=bench.label(),
            status="running",
            **({"model_changed_on_resume": changed} if changed else {}),
            **_tags(cfg),
        )
        start = time.monotonic()
        metrics = bench.run_suite(cfg.model, run_dir, cfg.limit)
    write_json(run_dir / "metrics.json", metrics)
    update_run_info(
        run_dir, status="complete", finished=now(), elapsed_s=round(time.monotonic() - start, 3)
    )
    return metrics
