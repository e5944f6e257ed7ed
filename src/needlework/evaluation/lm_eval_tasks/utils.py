"""Functions the lm-eval task YAMLs in this package point at with ``!function``.

Two kinds:

* ``*_dataset`` loaders (lm-eval's ``custom_dataset`` hook, called with the task ``metadata`` plus
  ``dataset_kwargs``): they read the *local* copies in a ``shared/data``-style folder given as
  ``metadata.data_dir`` and return the docs in the same schema as the hub dataset the matching
  built-in lm-eval task uses, so prompts and metrics carry over unchanged. Without ``data_dir``
  the MMLU/HellaSwag loaders fetch the hub dataset instead (the generative variants need that).
* ``export_dataset`` / ``process_export``: read a file written by :func:`..export` and score an
  output with the benchmark's own ``score`` (the same metric functions as the needlework runner).

Paths are resolved here (absolute), never relative to the YAML: lm-eval resolves relative
``data_files`` against the current directory (stack-notes §5).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from needlework.errors import DataError, UserError
from needlework.io import read_jsonl, require
from needlework.sources.mmlu import mmlu_csv_split

# Files each local task reads, relative to data_dir (the ../shared/data layout).
LOCAL_FILES: dict[str, tuple[str, ...]] = {
    "mmlu": ("mmlu/mmlu_test.jsonl.gz", "mmlu/mmlu_data_csv.tar.gz"),
    "hellaswag": ("hellaswag/hellaswag_val_from_llamacpp_text.jsonl.gz",),
    "gsm8k": ("gsm8k/gsm8k_test.jsonl.gz",),
    "triviaqa": ("triviaqa/triviaqa_sm_sub.jsonl.gz",),
    "nq_open": ("nq-open/NQ-open.dev.jsonl.gz",),
}


def _data_dir(data_dir: Any, task: str) -> Path | None:
    if data_dir in (None, ""):
        return None
    root = Path(str(data_dir)).expanduser().resolve()
    missing = [f for f in LOCAL_FILES[task] if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"{root}: missing {', '.join(missing)} (needed by the local {task} "
            "task; expected the ../shared/data layout, see docs/general.md)"
        )
    return root


def _need_local(data_dir: Any, task: str) -> Path:
    root = _data_dir(data_dir, task)
    if root is None:
        raise UserError(
            f"needlework_{task}: no data_dir given; pass --metadata "
            '\'{"data_dir": "/path/to/shared/data"}\' or use lm-eval\'s built-in '
            f"'{task}' task, which reads the hub"
        )
    return root


def _datasets(splits: dict[str, list[dict[str, Any]]]):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


@functools.lru_cache(maxsize=16)
def _jsonl_cached(path: str, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    return tuple(read_jsonl(path))


def _rows(path: Path) -> tuple[dict[str, Any], ...]:
    """Rows of a (gz) JSONL file, parsed once per process (every MMLU subject reads the file)."""
    rows = _jsonl_cached(str(path), path.stat().st_mtime_ns)
    if not rows:
        raise DataError(f"{path}: no rows (an empty file; expected the ../shared/data copy)")
    return rows


# --------------------------------------------------------------------------- MMLU


@functools.lru_cache(maxsize=4)
def _mmlu_local(root: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """subject -> {"test": docs, "dev": docs} in cais/mmlu's schema (answer = index)."""
    base = Path(root) / "mmlu"
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    path = base / "mmlu_test.jsonl.gz"
    for i, row in enumerate(_rows(path), 1):
        where = f"{path}:{i}"
        subject = require(row, "subject", str, where)
        choices = require(row, "choices", list, where)
        answer = require(row, "answer_index", int, where)
        if len(choices) != 4 or not 0 <= answer < 4:
            raise DataError(f"{where}: expected 4 choices and answer_index 0-3")
        out.setdefault(subject, {"test": [], "dev": []})["test"].append(
            {
                "question": require(row, "question", str, where),
                "subject": subject,
                "choices": [str(c) for c in choices],
                "answer": answer,
            }
        )
    for doc in mmlu_csv_split(base / "mmlu_data_csv.tar.gz", "dev"):
        out.setdefault(doc["subject"], {"test": [], "dev": []})["dev"].append(doc)
    return out


def mmlu_dataset(data_dir: Any = None, subject: str | None = None, **_: Any):
    """One MMLU subject: ``test`` (evaluated) and ``dev`` (the 5 few-shot examples)."""
    if not subject:
        raise UserError("needlework_mmlu: dataset_kwargs.subject is required")
    root = _data_dir(data_dir, "mmlu")
    if root is None:  # hub (generative variant without local data)
        import datasets

        hub = datasets.load_dataset("cais/mmlu", subject)
        return datasets.DatasetDict({"test": hub["test"], "dev": hub["dev"]})
    table = _mmlu_local(str(root))
    if subject not in table:
        raise DataError(f"{root}/mmlu: no subject '{subject}' (have {len(table)} subjects)")
    return _datasets(table[subject])


# --------------------------------------------------------------------------- HellaSwag


def hellaswag_dataset(data_dir: Any = None, **_: Any):
    """HellaSwag validation as lm-eval's processed docs: ``query``, ``choices``, ``label``.

    The local file is llama.cpp's text copy: markup already stripped and ``ctx_a``/``ctx_b``
    merged, so lm-eval's ``ctx_b.capitalize()`` cannot be reproduced (documented caveat). The
    same ``preprocess`` clean-up as lm-eval is applied to what is there.
    """
    from lm_eval.tasks.hellaswag.utils import preprocess

    root = _data_dir(data_dir, "hellaswag")
    if root is None:
        import datasets

        hub = datasets.load_dataset("Rowan/hellaswag", split="validation")
        docs = [
            {
                "query": preprocess(
                    d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize()
                ),
                "choices": [preprocess(e) for e in d["endings"]],
                "label": int(d["label"]),
            }
            for d in hub
        ]
        return _datasets({"validation": docs})
    path = root / LOCAL_FILES["hellaswag"][0]
    docs = []
    for i, row in enumerate(_rows(path), 1):
        where = f"{path}:{i}"
        endings = require(row, "endings", list, where)
        label = require(row, "label", int, where)
        if len(endings) != 4 or not 0 <= label < 4:
            raise DataError(f"{where}: expected 4 endings and label 0-3")
        docs.append(
            {
                "query": preprocess(
                    require(row, "activity_label", str, where)
                    + ": "
                    + require(row, "ctx", str, where)
                ),
                "choices": [preprocess(str(e)) for e in endings],
                "label": label,
            }
        )
    return _datasets({"validation": docs})


# --------------------------------------------------------------------------- GSM8K, TriviaQA, NQ


def gsm8k_dataset(data_dir: Any = None, **_: Any):
    """GSM8K test (question, answer); there is no local train split, see the YAML."""
    path = _need_local(data_dir, "gsm8k") / LOCAL_FILES["gsm8k"][0]
    docs = [
        {
            "question": require(r, "question", str, f"{path}:{i}"),
            "answer": require(r, "answer", str, f"{path}:{i}"),
        }
        for i, r in enumerate(_rows(path), 1)
    ]
    return _datasets({"test": docs})


def _keep(held_out: Any) -> Any:
    """A predicate on question text dropping those of the held-out datasets' manifests."""
    if not held_out:
        return lambda question: True
    from needlework.heldout import load_held_out, question_key

    held = load_held_out([str(p) for p in held_out])
    return lambda question: question_key(question) not in held


def triviaqa_dataset(data_dir: Any = None, held_out: Any = (), **_: Any):
    """llm-foundry's 3K TriviaQA subset as ``question`` + ``answer.aliases`` (rc.nocontext),
    without the questions of ``held_out`` datasets."""
    path = _need_local(data_dir, "triviaqa") / LOCAL_FILES["triviaqa"][0]
    keep = _keep(held_out)
    docs = []
    for i, r in enumerate(_rows(path), 1):
        where = f"{path}:{i}"
        ctx = require(r, "context", str, where)
        if not (ctx.startswith("Question: ") and ctx.endswith("\nAnswer:")):
            raise DataError(f"{where}: context should look like 'Question: ...\\nAnswer:'")
        aliases = [str(a) for a in require(r, "aliases", list, where)]
        if not keep(ctx[len("Question: ") : -len("\nAnswer:")]):
            continue
        docs.append(
            {
                "question": ctx[len("Question: ") : -len("\nAnswer:")],
                "answer": {"value": require(r, "answer", str, where), "aliases": aliases},
            }
        )
    return _datasets({"validation": docs})


def nq_open_dataset(data_dir: Any = None, held_out: Any = (), **_: Any):
    """NQ-open dev (3,610 questions), the same rows as the hub's nq_open validation split,
    without the questions of ``held_out`` datasets."""
    path = _need_local(data_dir, "nq_open") / LOCAL_FILES["nq_open"][0]
    keep = _keep(held_out)
    docs = [
        {
            "question": require(r, "question", str, f"{path}:{i}"),
            "answer": [str(a) for a in require(r, "answer", list, f"{path}:{i}")],
        }
        for i, r in enumerate(_rows(path), 1)
        if keep(require(r, "question", str, f"{path}:{i}"))
    ]
    return _datasets({"validation": docs})


# --------------------------------------------------------------------------- exported benchmarks


def export_dataset(data_file: Any = None, **_: Any):
    """Docs of a file written by ``needlework.evaluation.lm_eval_tasks.export``."""
    if not data_file:
        raise UserError("exported needlework task: dataset_kwargs.data_file is missing")
    path = Path(str(data_file)).expanduser().resolve()
    docs = []
    for i, r in enumerate(read_jsonl(path), 1):
        where = f"{path}:{i}"
        require(r, "id", str, where)
        require(r, "prompt", str, where)
        require(r, "sample", str, where)
        require(r, "benchmark", str, where)
        docs.append(
            {
                "id": r["id"],
                "system": str(r.get("system") or ""),
                "prompt": r["prompt"],
                "answer": str(r.get("answer") or ""),
                "sample": r["sample"],
                "benchmark": r["benchmark"],
            }
        )
    if not docs:
        raise DataError(f"{path}: no samples")
    return _datasets({"test": docs})


def process_export(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Score one generation with the exporting benchmark's ``score`` (same code as the runner)."""
    from needlework.evaluation.lm_eval_tasks import sample_from_json, scorer_from_json

    scores = scorer_from_json(doc["benchmark"]).score(sample_from_json(doc["sample"]), results[0])
    return {k: float(v) for k, v in scores.items()}
