"""lm-evaluation-harness tasks shipped with needlework, and the export of needlework's own ones.

* :func:`include_path` is the folder of ``needlework_*`` YAMLs for the general benchmarks on
  local data (MMLU, HellaSwag, GSM8K, TriviaQA, NQ-Open and the letter-answer variants)::

      lm_eval --model hf --model_args pretrained=DIR --tasks needlework_mmlu \\
        --include_path $(python -m needlework.evaluation.lm_eval_tasks path) \\
        --metadata '{"data_dir": "../shared/data"}'

* :func:`export` turns any needlework benchmark (MDQA, FLenQA, KV retrieval, NIAH) into an lm-eval
  task folder: the prompts of ``samples()`` as JSONL plus a generated YAML whose
  ``process_results`` calls the benchmark's own ``score``, so ``lm_eval`` gives the same scores as
  ``needlework eval`` on the same outputs (run lm_eval with ``--apply_chat_template``: needlework
  backends always use the chat template)::

      python -m needlework.evaluation.lm_eval_tasks export configs/eval/mdqa_20docs.yaml tasks/
      lm_eval --model hf --model_args pretrained=DIR --apply_chat_template \\
        --include_path tasks/ --tasks needlework_mdqa_20docs

Heavy libraries (lm_eval, datasets) load only inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
from itertools import islice
from pathlib import Path
from typing import Any

from needlework.errors import UserError
from needlework.evaluation.base import answer_budget
from needlework.io import ensure_writable_dir, sha256_file, write_jsonl, write_text
from needlework.records import Sample

# Score names that are better when lower (only lm-eval's display arrows depend on this).
LOWER_IS_BETTER = frozenset({"refused", "coverage_failure"})


def include_path() -> Path:
    """Folder holding the needlework_* task YAMLs (general benchmarks on local data)."""
    return Path(__file__).resolve().parent / "tasks"


def sample_to_json(sample: Sample) -> str:
    return json.dumps(
        {
            "id": sample.id,
            "messages": list(sample.messages),
            "answers": list(sample.answers),
            "meta": dict(sample.meta),
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def sample_from_json(text: str) -> Sample:
    d = json.loads(text)
    return Sample(d["id"], tuple(d["messages"]), tuple(d["answers"]), d["meta"])


@functools.lru_cache(maxsize=32)
def scorer_from_json(config_json: str) -> Any:
    """The benchmark unit an export came from (its ``score`` is all lm-eval needs)."""
    from needlework.config import build_unit
    from needlework.registry import benchmarks

    return build_unit(benchmarks, json.loads(config_json), source="exported lm-eval task")


def _split_turns(sample: Sample) -> tuple[str, str]:
    """(system text or "", user text): lm-eval tasks are one user turn, optionally a system one."""
    msgs = list(sample.messages)
    system = ""
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
    if len(msgs) != 1 or msgs[0]["role"] != "user":
        raise UserError(
            f"{sample.id}: lm-eval tasks take one user turn (plus an optional system "
            f"turn); this sample has roles {[m['role'] for m in sample.messages]}"
        )
    return system, msgs[0]["content"]


def export(benchmark: Any, out_dir: str | Path, *, limit: int | None = None) -> Path:
    """Write ``needlework_<label>.jsonl`` + ``.yaml`` into ``out_dir``; return the YAML path.
    ``benchmark`` is a registered unit (lm-eval rebuilds it from its config to score).

    The YAML is an lm-eval task with absolute data paths (relative ones would resolve against
    the current directory), the benchmark's ``max_new_tokens`` as ``max_gen_toks`` and one metric
    per score the benchmark reports.
    """
    from needlework.config import to_dict

    if callable(getattr(benchmark, "run_suite", None)):
        raise UserError(f"{benchmark.label()}: already an lm-eval suite; nothing to export")
    out = ensure_writable_dir(Path(out_dir).expanduser().resolve())
    task = f"needlework_{benchmark.label()}"
    config = json.dumps(to_dict(benchmark), sort_keys=True)
    rows, score_names, kept = [], None, []
    for sample in islice(benchmark.samples(), limit):
        kept.append(sample)
        system, prompt = _split_turns(sample)
        if score_names is None:
            score_names = list(benchmark.score(sample, ""))
        rows.append(
            {
                "id": sample.id,
                "benchmark": config,
                "system": system,
                "prompt": prompt,
                "answer": sample.answers[0] if sample.answers else "",
                "sample": sample_to_json(sample),
            }
        )
    if not rows:
        raise UserError(f"{task}: the benchmark produced no samples")
    # no model here: a budget from answers in characters, which never undercounts tokens
    budget = int(benchmark.max_new_tokens or answer_budget(kept))
    data = out / f"{task}.jsonl"
    write_jsonl(data, rows)
    metrics = "\n".join(
        f"  - {{metric: {json.dumps(m)}, aggregation: mean, "
        f"higher_is_better: {'false' if m in LOWER_IS_BETTER else 'true'}}}"
        for m in score_names or []
    )
    meta = {
        "version": 1.0,
        "needlework_benchmark": json.loads(config),
        "samples": len(rows),
        "data_sha256": sha256_file(data),
    }
    lines = [
        f"# Generated by needlework.evaluation.lm_eval_tasks.export: {benchmark.label()}, "
        f"{len(rows)} samples.",
        "# Scored by the benchmark's own score(); run with --apply_chat_template as needlework",
        "# backends do:",
        f"#   lm_eval --model hf --model_args pretrained=DIR --apply_chat_template "
        f"--include_path {out} --tasks {task}",
        f"task: {task}",
        "custom_dataset: !function needlework.evaluation.lm_eval_tasks.utils.export_dataset",
        f"dataset_kwargs: {{data_file: {json.dumps(str(data))}}}",
        "output_type: generate_until",
        "test_split: test",
        *(["description: system"] if any(r["system"] for r in rows) else []),
        "doc_to_text: prompt",
        "doc_to_target: answer",
        "process_results: !function needlework.evaluation.lm_eval_tasks.utils.process_export",
        "metric_list:",
        metrics,
        f"generation_kwargs: {{until: [], max_gen_toks: {budget}, do_sample: false}}",
        f"metadata: {json.dumps(meta, sort_keys=True)}",
    ]
    path = out / f"{task}.yaml"
    write_text(path, "\n".join(lines) + "\n")
    return path
