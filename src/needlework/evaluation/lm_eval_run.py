"""Running the ``general`` suite: needlework backend -> lm-eval model, tasks -> run folder.

Resumable at two levels: each finished task is kept in ``<run>/lm_eval/<task>.json`` (skipped on
the next run; it carries a fingerprint of the model and settings, and a mismatch is an error,
never a silent reuse), and with ``request_cache`` every model answer goes into lm-eval's request
cache ``<run>/lm_eval/requests-<model hash>_rank0.db``, so a task interrupted half-way only asks
the model for what is missing. That cache answers by prompt alone, so its name carries the model's
identity: another model never reads it. The runner's ``check_resumable`` refuses a run folder of
another model before any of this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from needlework.config import to_dict
from needlework.errors import UserError, first_line
from needlework.evaluation.base import report_declaration
from needlework.heldout import load_held_out
from needlework.io import ensure_writable_dir, sha256_text, write_json, write_jsonl
from needlework.models.base import answer_fields
from needlework.records import Prediction
from needlework.runinfo import version

if TYPE_CHECKING:  # the unit calls this module, never the other way round at import time
    from needlework.evaluation.benchmarks.general import General

log = logging.getLogger(__name__)
WORK = "lm_eval"


def build_lm(backend: str, unit: Any, batch_size: int | None) -> Any:
    """The backend's own lm-eval model where it has one (``lm_eval_model``: local weights,
    log-likelihoods work, e.g. HFLM / vLLM); lm-eval over its chat interface otherwise."""
    own = unit.lm_eval_model(batch_size)
    if own is not None:
        return own
    from needlework.evaluation.lm_eval_adapter import ChatModelLM

    return ChatModelLM(unit, batch_size=batch_size or 64)


def data_root(bench: General) -> Path | None:
    """Absolute data_dir with every file the chosen tasks read, or a one-line DataError.
    Without a data_dir the hub tasks are used, which an offline machine cannot reach and whose
    questions cannot be filtered (``held_out``)."""
    import os

    from needlework.errors import DataError
    from needlework.evaluation.lm_eval_tasks.utils import local_root

    if bench.data_dir is not None:
        return local_root(bench.data_dir, *bench.tasks)
    if bench.held_out and {"triviaqa", "nq_open"} & set(bench.tasks):
        raise DataError(
            "general.held_out: filtering questions needs the local tasks; set data_dir (or "
            "NEEDLEWORK_DATA) to a folder in the ../shared/data layout"
        )
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    offline = [
        v for v in flags if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
    ]
    if offline:
        raise DataError(
            f"general: no data_dir and {'/'.join(offline)} is set, so lm-eval's hub datasets "
            "cannot load; set general.data_dir to a local copy in the ../shared/data layout "
            "(docs/general.md), or unset it online"
        )
    return None


def run_general(bench: General, unit: Any, run_dir: Path, limit: int | None) -> dict[str, Any]:
    """Evaluate every planned task, write predictions.jsonl and metrics.json, return metrics."""
    import lm_eval

    backend = type(unit).registry_name
    plan = bench.plan(backend)
    root = data_root(bench)
    work = ensure_writable_dir(run_dir / WORK)
    # what makes two models the same, by the runner's rule: every field but the backend's
    # speed-only ones, so a suite resumes with another batch size or endpoint like a benchmark
    identity = answer_fields(to_dict(unit))
    count = limit if limit is not None else bench.fraction
    settings: dict[str, Any] = {
        "backend": backend,
        "data_dir": str(root) if root else None,
        "apply_chat_template": bench.apply_chat_template,
        "fewshot_as_multiturn": bench.apply_chat_template,
        "limit": limit,
        "max_gen_toks": bench.max_gen_toks,
        "fraction": bench.fraction if limit is None else None,
        "generative": any(p["generative_variant"] for p in plan),
        "lm_eval_version": version("lm_eval"),
    }
    held = [str(Path(p).expanduser().resolve()) for p in bench.held_out]
    if held:
        keys = sorted(load_held_out(held))
        settings["held_out"] = {
            "paths": held,
            "questions": len(keys),
            "sha256": sha256_text("\n".join(keys)),
        }

    cache = work / f"requests-{sha256_text(json.dumps(identity, sort_keys=True))[:12]}"
    lm = manager = None
    rows: list[dict[str, Any]] = []
    tasks: dict[str, Any] = {}
    for item in plan:
        fingerprint = {
            "model": identity,
            "settings": settings,
            "task": item["task"],
            "shots": item["shots"],
        }
        done_file = work / f"{item['key']}.json"
        done = _load_done(done_file, fingerprint)
        if done is None:
            if lm is None:
                from lm_eval.tasks import TaskManager

                from needlework.evaluation.lm_eval_tasks import include_path

                lm = build_lm(backend, unit, bench.batch_size)
                manager = TaskManager(  # lm-eval's built-in index (slow) only for hub tasks
                    include_path=str(include_path()),
                    include_defaults=any(not p["task"].startswith("needlework_") for p in plan),
                    metadata={"data_dir": str(root) if root else None, "held_out": held},
                )
            log.info("general: %s (%s, %d-shot)", item["key"], item["task"], item["shots"])
            try:
                res = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=[item["task"]],
                    num_fewshot=item["shots"],
                    limit=count,
                    log_samples=True,
                    apply_chat_template=bench.apply_chat_template,
                    fewshot_as_multiturn=bench.apply_chat_template,
                    task_manager=manager,
                    gen_kwargs={"max_gen_toks": bench.max_gen_toks} if bench.max_gen_toks else None,
                    use_cache=str(cache) if bench.request_cache else None,
                )
            except ConnectionError as exc:  # datasets' hub errors while a task loads its data
                raise UserError(
                    f"general: {item['task']}: cannot load its data ({first_line(exc)}); offline, "
                    "set general.data_dir (docs/general.md)"
                ) from None
            done = {"fingerprint": fingerprint, **_convert(item, res)}
            write_json(done_file, done)
        rows.extend(done["rows"])
        tasks[item["key"]] = done["summary"]
        write_jsonl(run_dir / "predictions.jsonl", rows)
    metrics = summarize(bench, plan, rows, tasks, unit.describe(), settings)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _load_done(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # damaged (not UTF-8, not JSON): the task runs again
        return None
    if not isinstance(done, dict) or not isinstance(done.get("fingerprint") or {}, dict):
        return None
    held = done.get("fingerprint") or {}
    changed = [k for k in fingerprint if k != "settings" and held.get(k) != fingerprint[k]]
    old, now = held.get("settings") or {}, fingerprint["settings"]
    changed += [k for k in now if old.get(k) != now[k]]
    if changed:
        raise UserError(
            f"{path}: results made with a different {', '.join(changed)}; "
            "use a new out_dir or delete the file"
        )
    return done


def _convert(item: dict[str, Any], res: Mapping[str, Any]) -> dict[str, Any]:
    """One simple_evaluate result -> prediction rows and a JSON-safe task summary."""
    configs = res.get("configs", {})
    rows: list[dict[str, Any]] = []
    for sub in sorted(res["samples"]):
        output_type = configs.get(sub, {}).get("output_type", "generate_until")
        rows.extend(rows_from_samples(item["key"], sub, res["samples"][sub], output_type))
    if item.get("closed_book"):
        add_closed_book_outcomes(item["key"], item["primary"], rows)
    shots = {k: int(v) for k, v in res.get("n-shot", {}).items()}
    wrong = {k: v for k, v in shots.items() if v != item["shots"]}
    if wrong:
        raise UserError(
            f"general: lm-eval ran {wrong} shots for {item['key']}, expected "
            f"{item['shots']} (the task config fixes its shot count)"
        )
    lm_results: dict[str, Any] = {}
    agg = res["results"].get(item["task"], {})
    for k, v in agg.items():
        if "," in k and (isinstance(v, (int, float)) or hasattr(v, "item")):
            metric, flt = k.split(",", 1)
            lm_results[f"{item['key']}/{metric_name(metric, flt)}"] = float(v)
    summary = {
        "lm_eval_task": item["task"],
        "num_fewshot": item["shots"],
        "primary_metric": f"{item['key']}/{item['primary']}",
        "n": len(rows),
        "subtasks": len(res["samples"]),
        "data_source": item["source"],
        "comparable_with_paper": item["caveat"] is None,
        "caveat": item["caveat"],
        "lm_eval_results": lm_results,
        "lm_eval_version": {
            k: v.item() if hasattr(v, "item") else v
            for k, v in res.get("versions", {}).items()
            if k == item["task"]
        },
    }
    return {"rows": rows, "summary": summary}


def summarize(
    bench: General,
    plan: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    tasks: dict[str, Any],
    model: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json (records.py format): every score with a 95% CI from the per-sample values;
    lm-eval's own aggregate and stderr sit beside it (``lm_eval``/``lm_eval_stderr``)."""
    from needlework.stats import summary

    names = list(dict.fromkeys(k for r in rows for k in r["scores"]))
    lm_values = {k: v for t in tasks.values() for k, v in t["lm_eval_results"].items()}
    metrics = summary(rows, names)
    for name in names:
        head, _, tail = name.partition("/")
        metric, _, flt = tail.partition(",")
        if name in lm_values:
            metrics[name]["lm_eval"] = lm_values[name]
        stderr = f"{head}/{metric_name(metric + '_stderr', flt or 'none')}"
        if stderr in lm_values:
            metrics[name]["lm_eval_stderr"] = lm_values[stderr]
    by_subject: dict[str, Any] = {}
    for r in rows:
        if "subject" in r["meta"]:
            by_subject.setdefault(r["meta"]["subject"], []).append(r)
    caveats = {k: t["caveat"] for k, t in tasks.items() if t["caveat"]}
    return {
        "benchmark": "general",
        "label": bench.label(),
        "model": model,
        "n": len(rows),
        "primary_metric": tasks[plan[0]["key"]]["primary_metric"],
        "metrics": metrics,
        "by": {
            "subject": {
                s: summary(g, [m for m in names if all(m in r["scores"] for r in g)])
                for s, g in sorted(by_subject.items())
            }
        }
        if by_subject
        else {},
        "tasks": tasks,
        "settings": settings,
        "comparable_with_paper": not caveats,
        "caveats": caveats,
        **report_declaration(bench),
    }


def metric_name(metric: str, filter_name: str) -> str:
    """lm-eval's ``metric,filter`` key without the default ``,none``."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def rows_from_samples(
    key: str, lm_task: str, logged: list[Mapping[str, Any]], output_type: str
) -> list[dict[str, Any]]:
    """lm-eval's logged samples of one (sub)task -> predictions.jsonl rows (one per document).

    Every filter's per-sample metric becomes a score ``<key>/<metric[,filter]>``, the same names
    metrics.json aggregates, so the mean of a score over the rows is the metric.
    """
    by_doc: dict[int, dict[str, Any]] = {}
    for s in logged:
        doc_id = int(s["doc_id"])
        doc = s.get("doc") or {}
        row = by_doc.get(doc_id)
        if row is None:
            subject = doc.get("subject") if isinstance(doc, Mapping) else None
            sid = f"{key}-{subject}-{doc_id}" if subject else f"{key}-{doc_id}"
            context = s["arguments"][0][0]
            if output_type == "multiple_choice":
                lls = [float(r[0]) for r in s["filtered_resps"]]
                best = max(range(len(lls)), key=lls.__getitem__)
                output = chr(ord("A") + best)
                detail: dict[str, Any] = {"loglikelihoods": lls}
            else:
                output = str(s["resps"][0][0])
                detail = {"filtered": {}}
            meta: dict[str, Any] = {"task": key, "lm_eval_task": lm_task, "doc_id": doc_id}
            if subject:
                meta["subject"] = subject
            row = Prediction(
                id=sid,
                benchmark="general",
                prompt_sha256=sha256_text(str(context)),
                output=output,
                scores={},
                meta=meta,
                lm_eval={"target": _plain(s.get("target")), **detail},
            ).to_json()  # scores and filtered answers are filled in below, per metric
            by_doc[doc_id] = row
        if output_type != "multiple_choice":
            row["lm_eval"]["filtered"][s["filter"]] = _plain(s["filtered_resps"][0])
        for metric in s["metrics"]:
            row["scores"][f"{key}/{metric_name(metric, s['filter'])}"] = float(s[metric])
    return [by_doc[d] for d in sorted(by_doc)]


def add_closed_book_outcomes(key: str, primary: str, rows: list[dict[str, Any]]) -> None:
    """``<key>/abstained`` and ``<key>/wrong_answer`` per row, from the answer lm-eval scored
    (its primary filter's output) and its exact-match score: the hallucination view of a
    knowledge benchmark (a wrong answer given instead of an abstention)."""
    from needlework.evaluation.metrics import is_abstention

    flt = primary.partition(",")[2]
    for row in rows:
        answer = row["lm_eval"].get("filtered", {}).get(flt, row["output"])
        abstained = is_abstention(str(answer))
        correct = row["scores"].get(f"{key}/{primary}", 0.0) > 0
        row["scores"][f"{key}/abstained"] = float(abstained)
        row["scores"][f"{key}/wrong_answer"] = float(not correct and not abstained)


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars, tuples) of an lm-eval value."""
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
