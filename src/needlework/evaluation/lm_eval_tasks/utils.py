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
from typing import Annotated, Any

from pydantic import Field
from typing_extensions import TypedDict

from needlework.config import validate
from needlework.errors import DataError, UserError
from needlework.io import iter_jsonl
from needlework.sources.mmlu import mmlu_csv_split

# The rows of each local file (the loaders below trust what these let through).
Four = Annotated[list[Any], Field(min_length=4, max_length=4)]
Index = Annotated[int, Field(ge=0, le=3)]


class MMLURow(TypedDict):
    question: str
    subject: str
    choices: Four
    answer_index: Index


class HellaSwagRow(TypedDict):
    activity_label: str
    ctx: str
    endings: Four
    label: Index


class GSM8KRow(TypedDict):
    question: str
    answer: str


QA = Annotated[str, Field(pattern=r"^Question: [\s\S]*\nAnswer:$")]


class TriviaQARow(TypedDict):
    context: QA
    answer: str
    aliases: list[Any]


class NQOpenRow(TypedDict):
    question: str
    answer: list[Any]


class ExportRow(TypedDict):
    id: str
    prompt: str
    sample: str
    benchmark: str
    system: str
    answer: str


# Files each local task reads, relative to data_dir (the ../shared/data layout).
LOCAL_FILES: dict[str, tuple[str, ...]] = {
    "mmlu": ("mmlu/mmlu_test.jsonl.gz", "mmlu/mmlu_data_csv.tar.gz"),
    "hellaswag": ("hellaswag/hellaswag_val_from_llamacpp_text.jsonl.gz",),
    "gsm8k": ("gsm8k/gsm8k_test.jsonl.gz",),
    "triviaqa": ("triviaqa/triviaqa_sm_sub.jsonl.gz",),
    "nq_open": ("nq-open/NQ-open.dev.jsonl.gz",),
}


def local_root(data_dir: Any, *tasks: str) -> Path | None:
    """Absolute ``data_dir`` holding every file the tasks read (None when none is given); else
    a one-line DataError naming the missing files."""
    if data_dir in (None, ""):
        return None
    root = Path(str(data_dir)).expanduser().resolve()
    missing = [f for t in tasks for f in LOCAL_FILES[t] if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"{root}: missing {', '.join(missing)} (needed by the local {'/'.join(tasks)} "
            "task; expected the ../shared/data layout, see docs/general.md)"
        )
    return root


def _need_local(data_dir: Any, task: str) -> Path:
    root = local_root(data_dir, task)
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
def _rows_cached(path: str, mtime_ns: int, kind: Any) -> tuple[Any, ...]:
    return tuple(validate(kind, row, source=f"{path}:{n}") for n, row in iter_jsonl(path))


def _rows(path: Path, kind: Any) -> tuple[Any, ...]:
    """The rows of a (gz) JSONL file as ``kind`` (errors name file, line and field), read once
    per process (every MMLU subject reads the file)."""
    rows = _rows_cached(str(path), path.stat().st_mtime_ns, kind)
    if not rows:
        raise DataError(f"{path}: no rows (an empty file; expected the ../shared/data copy)")
    return rows


# --------------------------------------------------------------------------- MMLU


@functools.lru_cache(maxsize=4)
def _mmlu_local(root: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """subject -> {"test": docs, "dev": docs} in cais/mmlu's schema (answer = index)."""
    base = Path(root) / "mmlu"
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in _rows(base / "mmlu_test.jsonl.gz", MMLURow):
        out.setdefault(row["subject"], {"test": [], "dev": []})["test"].append(
            {
                "question": row["question"],
                "subject": row["subject"],
                "choices": [str(c) for c in row["choices"]],
                "answer": row["answer_index"],
            }
        )
    for doc in mmlu_csv_split(base / "mmlu_data_csv.tar.gz", "dev"):
        out.setdefault(doc["subject"], {"test": [], "dev": []})["dev"].append(doc)
    return out


def mmlu_dataset(data_dir: Any = None, subject: str | None = None, **_: Any):
    """One MMLU subject: ``test`` (evaluated) and ``dev`` (the 5 few-shot examples)."""
    root = local_root(data_dir, "mmlu")
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

    root = local_root(data_dir, "hellaswag")
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
    docs = [
        {
            "query": preprocess(row["activity_label"] + ": " + row["ctx"]),
            "choices": [preprocess(str(e)) for e in row["endings"]],
            "label": row["label"],
        }
        for row in _rows(root / LOCAL_FILES["hellaswag"][0], HellaSwagRow)
    ]
    return _datasets({"validation": docs})


# --------------------------------------------------------------------------- GSM8K, TriviaQA, NQ


def gsm8k_dataset(data_dir: Any = None, **_: Any):
    """GSM8K test (question, answer); there is no local train split, see the YAML."""
    rows = _rows(_need_local(data_dir, "gsm8k") / LOCAL_FILES["gsm8k"][0], GSM8KRow)
    return _datasets({"test": [{"question": r["question"], "answer": r["answer"]} for r in rows]})


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
    docs = [
        {"question": q, "answer": {"value": r["answer"], "aliases": [str(a) for a in r["aliases"]]}}
        for r in _rows(path, TriviaQARow)
        if keep(q := r["context"][len("Question: ") : -len("\nAnswer:")])
    ]
    return _datasets({"validation": docs})


def nq_open_dataset(data_dir: Any = None, held_out: Any = (), **_: Any):
    """NQ-open dev (3,610 questions), the same rows as the hub's nq_open validation split,
    without the questions of ``held_out`` datasets."""
    path = _need_local(data_dir, "nq_open") / LOCAL_FILES["nq_open"][0]
    keep = _keep(held_out)
    docs = [
        {"question": r["question"], "answer": [str(a) for a in r["answer"]]}
        for r in _rows(path, NQOpenRow)
        if keep(r["question"])
    ]
    return _datasets({"validation": docs})


# --------------------------------------------------------------------------- exported benchmarks


def export_dataset(data_file: Any = None, **_: Any):
    """Docs of a file written by ``needlework.evaluation.lm_eval_tasks.export``."""
    path = Path(str(data_file)).expanduser().resolve()
    return _datasets({"test": [dict(r) for r in _rows(path, ExportRow)]})


def process_export(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Score one generation with the exporting benchmark's ``score`` (same code as the runner)."""
    from needlework.evaluation.lm_eval_tasks import sample_from_json, scorer_from_json

    scores = scorer_from_json(doc["benchmark"]).score(sample_from_json(doc["sample"]), results[0])
    return {k: float(v) for k, v in scores.items()}
