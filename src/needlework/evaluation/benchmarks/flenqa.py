"""FLenQA from "Same Task, More Tokens" (Levy, Jacoby & Goldberg, ACL 2024, arXiv:2402.14848),
the long-context reasoning benchmark of "From Artificial Needles to Real Haystacks" (§4.2).

Run:  needlework eval --config configs/eval/flenqa.yaml model.path=<model dir>

True/false questions over facts padded to 250..3000 tokens. The six prompts (task x CoT) and the
answer checker are the authors' (``FLenQA analysis.ipynb``), byte for byte and quirk for quirk:
see ``metrics.flenqa_*`` and docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from needlework.config import PositiveInt, config, validate
from needlework.errors import DataError, first_line
from needlework.evaluation.base import Benchmark
from needlework.evaluation.benchmarks.common import seeded_subset, user_turn, with_context_tokens
from needlework.evaluation.metrics import (
    OTHER_REFUSED,
    flenqa_category,
    flenqa_correct,
    flenqa_cot_coverage,
    flenqa_early_response,
    flenqa_normalize,
)
from needlework.records import Figure, Sample
from needlework.registry import benchmarks
from needlework.sources.data import read_rows
from needlework.sources.prompts import fill, load_prompt

HUB_ID = "alonj/FLenQA"
Task = Literal["PIR", "MonoRel", "Simplified RuleTaker"]
# the sample's ``dataset`` field -> prompt file stem (``_cot`` appended with chain of thought)
TASK_PROMPTS = {
    "PIR": "flenqa_pir",
    "MonoRel": "flenqa_monorel",
    "Simplified RuleTaker": "flenqa_simplified_ruletaker",
}


Row = TypedDict(
    "Row",
    {
        "dataset": Task,
        "assertion/question": str,
        "mixin": str,
        "label": Literal["True", "False", "true", "false", True, False],
        "ctx_size": int,
        "padding_type": str,
        "dispersion": str,
        "rule": NotRequired[list[Any] | str | None],  # Simplified RuleTaker rows only
        "facts": NotRequired[Any],
        "statement": NotRequired[Any],
        "global_sample_id": NotRequired[Any],
        "sample_id": NotRequired[Any],
    },
)
"""One FLenQA row (a file line or hub row); other columns are dropped."""


def flenqa_prompt(row: Row, cot: bool) -> str:
    """The authors' prompt for one row: chosen by ``row['dataset']``, trailing newline kept.

    ``rule`` (a list) goes in as Python's ``str()`` of it, as the authors' f-strings do.
    """
    stem = TASK_PROMPTS[row["dataset"]] + ("_cot" if cot else "")
    values = {"assertion/question": str(row["assertion/question"]), "mixin": str(row["mixin"])}
    if row["dataset"] == "Simplified RuleTaker":
        values["rule"] = str(row["rule"])
    return fill(load_prompt(stem), values)


def key_facts(row: Row) -> list[str]:
    """What ``cot_coverage`` counts: ``facts``, or RuleTaker's ``statement`` items.

    The notebook iterates ``sample['statement']``; a plain-string statement is taken as one item
    here (iterating its characters would count letters).
    """
    items = row.get("statement") if row["dataset"] == "Simplified RuleTaker" else row.get("facts")
    if items is None:
        return []
    return [items] if isinstance(items, str) else [str(x) for x in items]


@benchmarks.register("flenqa")
@config
class FLenQA(Benchmark):
    """FLenQA true/false reasoning: accuracy by task, context size, dispersion and padding."""

    data_path: str = HUB_ID
    """Hub id (needs the network or the HF cache) or a local .jsonl/.jsonl.gz/.parquet/.zip."""
    split: str = "eval"
    """Hub split (local files have one table)."""
    revision: str | None = None
    """Hub revision (commit sha or tag) to pin the dataset to; None = the hub's current one."""
    cot: bool = False
    """Chain-of-thought prompts (label ``flenqa_cot``), scored with cot_coverage/early_response."""
    tasks: tuple[Task, ...] = ()
    """Keep only these ``dataset`` values (PIR, MonoRel, Simplified RuleTaker); empty = all."""
    ctx_sizes: tuple[int, ...] = ()
    """Keep only these ``ctx_size`` values (250, 500, 1000, 2000, 3000); empty = all."""
    padding_types: tuple[str, ...] = ()
    """Keep only these ``padding_type`` values; empty = all."""
    dispersions: tuple[str, ...] = ()
    """Keep only these ``dispersion`` values (first, middle, last, random); empty = all."""
    num_samples: PositiveInt | None = None
    """Seeded subset of the rows left after filtering; None = all."""
    seed: int = 0
    """Chooses the subset."""
    tokenizer: str | None = None
    """``load_counter`` spec to record ``context_tokens`` per sample."""
    max_new_tokens: PositiveInt = 400
    """The authors' limit, in both modes. Without CoT a compliant model stops after a word, so the
    limit only costs time on models that ramble, and there the last-mention rule needs the text."""

    group_by = ("task", "ctx_size", "dispersion", "padding_type")
    primary_metric = "correct"
    needs_token_counter = False  # the tokenizer only records context_tokens

    @property
    def report_rank(self) -> int:
        return 21 if self.cot else 20  # without CoT first, as the paper shows them

    def figures(self) -> tuple[Figure, ...]:
        return (
            Figure(
                "line",
                heading="FLenQA: accuracy by context length, with and without CoT",
                name="by_length",
                x="ctx_size",
                title="FLenQA: {metric} by context length",
                caption="FLenQA accuracy by context length",
                xlabel="context length (tokens)",
                shared="flenqa_by_length",
                panel="CoT" if self.cot else "no CoT",
            ),
        )

    def label(self) -> str:
        return "flenqa_cot" if self.cot else "flenqa"

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        category = flenqa_category(flenqa_normalize(output))
        scores = {
            "correct": float(flenqa_correct(output, sample.meta["label"])),
            "refused": float(category == OTHER_REFUSED),
        }
        if self.cot:
            coverage = flenqa_cot_coverage(output, sample.meta["key_facts"])
            scores["cot_coverage"] = float(coverage)
            scores["coverage_failure"] = float(coverage < 2)
            scores["early_response"] = float(flenqa_early_response(output))
        return scores

    def samples(self) -> Iterator[Sample]:
        rows = [(i, row) for i, row in enumerate(self._rows()) if self._keep(row)]
        yield from with_context_tokens(
            (
                self._sample(*rows[k])
                for k in seeded_subset(len(rows), self.num_samples, self.seed, "flenqa")
            ),
            self.tokenizer,
        )

    def _sample(self, index: int, row: Row) -> Sample:
        label = str(row["label"])
        meta = {
            "task": row["dataset"],
            "ctx_size": row["ctx_size"],
            "dispersion": row["dispersion"],
            "padding_type": row["padding_type"],
            "label": label,
            "global_sample_id": row.get("global_sample_id"),
            "sample_id": row.get("sample_id"),
            "row": index,
            "cot": self.cot,
            "key_facts": key_facts(row),
        }
        return Sample(f"flenqa-{index}", user_turn(flenqa_prompt(row, self.cot)), (label,), meta)

    def _keep(self, row: Row) -> bool:
        return (
            (not self.tasks or row["dataset"] in self.tasks)
            and (not self.ctx_sizes or row["ctx_size"] in self.ctx_sizes)
            and (not self.padding_types or row["padding_type"] in self.padding_types)
            and (not self.dispersions or row["dispersion"] in self.dispersions)
        )

    def _rows(self) -> Iterator[Row]:
        path = Path(self.data_path)
        local = path.exists() or path.suffix or "/" not in self.data_path
        lines = read_rows(path) if local else _hub_rows(self.data_path, self.split, self.revision)
        for where, raw in lines:
            row: Row = validate(Row, raw, source=where)
            if row["dataset"] == "Simplified RuleTaker" and row.get("rule") is None:
                raise DataError(f"{where}: field 'rule': is required for Simplified RuleTaker")
            yield row


def _hub_rows(
    hub_id: str, split: str, revision: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows through ``datasets`` (imported here: only hub runs pay for it)."""
    try:
        import datasets

        table = datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as exc:  # offline, unknown id or split: many exception types
        raise DataError(
            f"{hub_id} (split {split}): cannot load from the Hugging Face hub "
            f"({type(exc).__name__}: {first_line(exc)});"
            " set data_path to a local .jsonl/.parquet copy"
        ) from None
    for i, row in enumerate(table, 1):
        yield f"{hub_id}[{split}]:row {i}", dict(row)
