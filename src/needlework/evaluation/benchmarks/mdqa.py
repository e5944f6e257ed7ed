"""Multi-document QA from "Lost in the Middle" (Liu et al., 2023, arXiv:2307.03172), the main
retrieval benchmark of "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR 2025, §4.1).

Run:  needlework eval --config configs/eval/mdqa_20docs.yaml model.path=<model dir>

Three sources of documents: ``build`` k-document sets from the oracle file (random or BM25
distractors, any k, any gold positions); ``files``, the official ``qa_data`` files (Contriever
distractors; 10/20/30 documents, gold at 0/4/9/...), found under ``data_path`` or downloaded at the
pinned commit and verified with ``download: true``. Baselines: ``mode: closedbook`` (no documents)
and ``mode: oracle`` (the gold document only). Score: ``best_subspan_em`` of the first line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from needlework.config import PositiveInt, config
from needlework.errors import DataError
from needlework.evaluation.base import Benchmark
from needlework.evaluation.benchmarks.common import (
    Positions,
    seeded_subset,
    user_turn,
    with_context_tokens,
)
from needlework.evaluation.metrics import (
    best_subspan_em,
    first_line,
    is_abstention,
    unsupported_answer,
    wrong_answer,
)
from needlework.heldout import load_held_out, question_key
from needlework.records import Figure, Sample
from needlework.registry import benchmarks
from needlework.sources import mdqa as mb
from needlework.sources.data import (
    Document,
    QARecord,
    download_verified,
    litm_checksums,
    locate,
    read_qa_records,
)

ORACLE = "qa_data/nq-open-oracle.jsonl.gz"
PROMPT_SUFFIX = {
    "qa": "",
    "qa_ordered_randomly": "_randomorder",
    "qa_with_query_aware_contextualization": "_queryaware",
}


def official_path(num_docs: int, gold_position: int) -> str:
    """Upstream path of an official MDQA file, e.g. ``..._gold_at_9.jsonl.gz``."""
    return (
        f"qa_data/{num_docs}_total_documents/"
        f"nq-open-{num_docs}_total_documents_gold_at_{gold_position}.jsonl.gz"
    )


@benchmarks.register("mdqa")
@config
class MDQA(Benchmark):
    """Multi-document QA (NQ-Open): accuracy by the gold document's position."""

    data_path: str = "data/lost-in-the-middle"
    """The oracle file (``build``) or an official ``qa_data`` file, or a folder searched for the
    files by their upstream names (and downloaded into with ``download: true``). The default
    is looked for in ``$NEEDLEWORK_DATA`` first, then ``data/``."""
    source: Literal["build", "files"] = "build"
    """``build`` contexts from the oracle file, or read the official ``files``."""
    download: bool = False
    """Fetch missing files from github.com/nelson-liu/lost-in-the-middle at commit 29b8a6d."""
    verify: bool = True
    """Check files named like upstream files against the pinned size, sha256 and git blob id."""
    mode: Literal["documents", "closedbook", "oracle"] = "documents"
    """``documents`` (the benchmark), or a baseline: ``closedbook`` (question only), ``oracle``
    (gold document only). Baselines use the oracle file and ignore the document settings."""
    num_docs: PositiveInt = 20
    """Documents per context (gold included): 10/20/30 upstream, anything when building."""
    gold_positions: Positions = (0, 1, 4, 9, 14, 19)
    """0-based gold indices; the paper's 1, 2, 5, 10, 15, 20 (one-based) by default."""
    num_questions: PositiveInt | None = 200
    """Questions per gold position (seeded subset, the same at every position); None = all 2655."""
    distractors: Literal["random", "bm25"] = "random"
    """``build`` only: random passages (paper setting) or BM25-ranked hard negatives."""
    prompt: Literal["qa", "qa_ordered_randomly", "qa_with_query_aware_contextualization"] = "qa"
    """Lost-in-the-Middle prompt variant."""
    seed: int = 0
    """Chooses the questions and the random distractors."""
    tokenizer: str | None = None
    """``load_counter`` spec (e.g. ``hf:<model dir>``) to record ``context_tokens`` per sample."""
    held_out: tuple[str, ...] = ()
    """Finetuning datasets (folders or manifest.json) whose recorded questions are never asked:
    questions are chosen among the rest, so every model given the same list gets the same."""
    split: Literal["all", "dev", "test"] = "all"
    """Questions to choose from: ``dev``, a fixed tenth (the same for every seed and config:
    tune settings there, e.g. a position fix's), ``test`` the rest, disjoint from it."""
    max_new_tokens: PositiveInt = 100
    """As Lost in the Middle; only the first line is scored."""

    def __post_init__(self) -> None:
        fits = all(p < self.num_docs for p in self.gold_positions)
        if self.mode == "documents" and not (self.gold_positions and fits):
            raise ValueError(
                f"gold_positions: expected at least one, each < num_docs ({self.num_docs}), "
                f"got {list(self.gold_positions)}"
            )
        if self.source == "files" and self.distractors != "random":
            raise ValueError(
                "distractors: the official files come with their own (Contriever) "
                "distractors; use source: build for bm25"
            )

    @property
    def group_by(self) -> tuple[str, ...]:
        return ("gold_position", "num_docs") if self.mode == "documents" else ()

    primary_metric = "best_subspan_em"
    # how wrong answers fail: invented (not in any document) or declined; closed book, wrong
    secondary_metrics = ("unsupported", "wrong_answer", "abstained")

    needs_token_counter = False  # the tokenizer only records context_tokens
    report_rank = 10

    def figures(self) -> tuple[Figure, ...]:
        if self.mode != "documents":
            return ()  # closed-book and oracle: one score, overall tables only
        return (
            Figure(
                "line",
                heading="MDQA ({label}): accuracy by gold document position",
                name="by_position",
                x="gold_position",
                x_axis="position",
                what="gold document",
                size="num_docs",
                title="MDQA: {metrics} by gold document position",
                caption="MDQA ({label}) by gold document position",
            ),
        )

    def label(self) -> str:
        if self.mode != "documents":
            return f"mdqa_{self.mode}" + ("" if self.split == "all" else f"_{self.split}")
        kind = (
            "_litm" if self.source == "files" else ("_bm25" if self.distractors == "bm25" else "")
        )
        split = "" if self.split == "all" else f"_{self.split}"
        return f"mdqa_{self.num_docs}docs{kind}{PROMPT_SUFFIX[self.prompt]}{split}"

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Accuracy, plus how wrong answers fail: abstaining, or (with documents) an answer the
        documents do not contain; closed book, answering wrongly instead of abstaining."""
        line = first_line(output)
        scores = {
            "best_subspan_em": best_subspan_em(line, sample.answers),
            "abstained": float(is_abstention(line)),
        }
        if self.mode == "closedbook":
            scores["wrong_answer"] = wrong_answer(line, sample.answers)
        else:
            prompt = sample.messages[-1]["content"]
            documents = "\n".join(x for x in prompt.splitlines() if x.startswith("Document ["))
            scores["unsupported"] = unsupported_answer(line, sample.answers, documents)
        return scores

    # ------------------------------------------------------------------------------ samples

    def samples(self) -> Iterator[Sample]:
        if self.mode != "documents":
            samples = self._baseline()
        elif self.source == "files":
            samples = self._official()
        else:
            samples = self._built()
        yield from with_context_tokens(samples, self.tokenizer)

    def _sample(
        self, sid: str, rec: QARecord, docs: Sequence[Document] | None, **meta: Any
    ) -> Sample:
        """The QA prompt over ``docs`` (None: closed book) for ``rec``."""
        q = rec.question
        prompt = mb.closedbook_prompt(q) if docs is None else mb.qa_prompt(q, docs, self.prompt)
        return Sample(sid, user_turn(prompt), rec.answers, {"question": q, **meta})

    def _records(self, upstream: str) -> list[QARecord]:
        return read_qa_records(self._path(upstream), self.verify)

    def _questions(self, records: list[QARecord]) -> list[int]:
        """The seeded subset of questions, taken in the split among those no held-out dataset
        used."""
        held = load_held_out(self.held_out) if self.held_out else set()
        allowed = [i for i, r in enumerate(records) if question_key(r.question) not in held]
        if self.split != "all":
            dev = set(seeded_subset(len(records), max(1, len(records) // 10), 0, "mdqa-dev"))
            allowed = [i for i in allowed if (i in dev) == (self.split == "dev")]
        picked = seeded_subset(len(allowed), self.num_questions, self.seed, "mdqa")
        return [allowed[j] for j in picked]

    def _baseline(self) -> Iterator[Sample]:
        records = self._records(ORACLE)
        for q in self._questions(records):
            rec = records[q]
            if self.mode == "closedbook":
                yield self._sample(f"mdqa-{q}", rec, None, question_index=q, num_docs=0)
            else:
                gold = [rec.documents[rec.gold_index or 0]]
                yield self._sample(
                    f"mdqa-{q}", rec, gold, question_index=q, num_docs=1, gold_position=0
                )

    def _built(self) -> Iterator[Sample]:
        records = self._records(ORACLE)
        pool = mb.DistractorPool(records)
        chosen = self._questions(records)
        k = self.num_docs - 1
        if self.distractors == "bm25":
            picks = mb.bm25_distractors(pool, records, chosen, k)
        else:  # one rng per question: its distractors do not depend on which others are chosen
            picks = {
                q: mb.random_distractors(
                    pool, q, records[q].answers, k, random.Random(f"mdqa-{self.seed}-{q}")
                )
                for q in chosen
            }
        meta = {"num_docs": self.num_docs, "distractors": self.distractors}
        for q in chosen:
            rec = records[q]
            gold = rec.documents[rec.gold_index or 0]
            distractors = [pool.docs[j] for j in picks[q]]
            for g in self.gold_positions:
                docs = mb.insert_gold(distractors, gold, g)
                sid = f"mdqa-{self.seed}-{q}-g{g}"
                yield self._sample(sid, rec, docs, question_index=q, gold_position=g, **meta)

    def _official(self) -> Iterator[Sample]:
        files = {g: self._records(official_path(self.num_docs, g)) for g in self.gold_positions}
        total = min(len(r) for r in files.values())
        meta = {"num_docs": self.num_docs, "distractors": "contriever"}
        for q in self._questions(next(iter(files.values()))[:total]):
            for g, records in files.items():
                rec = records[q]
                if len(rec.documents) != self.num_docs or rec.gold_index != g:
                    raise DataError(
                        f"{rec.where}: expected {self.num_docs} documents with the "
                        f"gold one at index {g}, got {len(rec.documents)} with gold "
                        f"at {rec.gold_index}"
                    )
                sid = f"mdqa-litm-{q}-g{g}"
                yield self._sample(
                    sid, rec, rec.documents, question_index=q, gold_position=g, **meta
                )

    def _path(self, upstream: str) -> Path:
        """Locate ``upstream`` under data_path (or data_path itself), downloading if allowed."""
        name = Path(upstream).name
        try:  # a folder the user chose is final; the default one is also looked for locally
            return locate(
                self.data_path,
                type(self).data_path,
                "lost-in-the-middle",
                (upstream, name),
                field="mdqa.data_path",
                search=True,
                hint="; download: true fetches it from the pinned upstream",
            )
        except DataError:
            if not self.download:
                raise
        return download_verified(upstream, Path(self.data_path) / upstream, litm_checksums())
