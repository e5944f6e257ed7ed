"""Build multi-document QA contexts from the Lost-in-the-Middle oracle file.

The oracle file (``qa_data/nq-open-oracle.jsonl.gz``) holds every NQ-Open question with its
answers and its gold passage. A k-document context is the gold passage plus ``k-1`` distractors
taken from *other* questions' passages:

* ``random`` — drawn uniformly (the paper's main MDQA setting per spec §4.1: the finetuned models
  improve with non-retrieved distractors, not with retrieved ones);
* ``bm25`` — ranked by BM25 (``bm25s``) against the question: hard negatives, in rank order, as
  Lost in the Middle orders its Contriever-retrieved distractors.

Either way a passage containing any of the question's answers under the metric's own
normalisation (:func:`metrics.contains_answer`) is never a distractor, and the same distractors
are used at every gold position so that only the position changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from needlework.errors import DataError
from needlework.sources.answers import normalize_answer
from needlework.sources.data import Document, QARecord
from needlework.sources.prompts import load_prompt


def format_documents(documents: Sequence[Document]) -> str:
    """``Document [i](Title: t) text`` lines, 1-based, joined by newlines (no space before (."""
    return "\n".join(
        f"Document [{i}](Title: {d.title}) {d.text}" for i, d in enumerate(documents, 1)
    )


def qa_prompt(question: str, documents: Sequence[Document], template: str = "qa") -> str:
    """The Lost-in-the-Middle QA prompt (template file with its trailing newline stripped)."""
    text = load_prompt(template).rstrip("\n")
    return text.format(question=question, search_results=format_documents(documents))


def closedbook_prompt(question: str) -> str:
    """``Question: {question}\\nAnswer:`` — the no-documents baseline."""
    return load_prompt("closedbook_qa").rstrip("\n").format(question=question)


def insert_gold(distractors: Sequence[Document], gold: Document, position: int) -> list[Document]:
    """The distractors with the gold passage inserted at 0-based ``position``."""
    return [*distractors[:position], gold, *distractors[position:]]


class DistractorPool:
    """Every distinct passage of the oracle file, with its normalised text for answer checks."""

    def __init__(self, records: Sequence[QARecord]):
        self.docs: list[Document] = []
        self.passage_of: list[int] = []  # record index -> pool index of its gold passage
        index: dict[tuple[str, str], int] = {}
        for rec in records:
            gold = rec.documents[rec.gold_index or 0]
            key = (gold.title, gold.text)
            if key not in index:
                index[key] = len(self.docs)
                self.docs.append(Document(gold.title, gold.text, isgold=False))
            self.passage_of.append(index[key])
        self._norm = [normalize_answer(f"{d.title} {d.text}") for d in self.docs]

    def __len__(self) -> int:
        return len(self.docs)

    def allowed(self, j: int, record_index: int, norm_answers: Sequence[str]) -> bool:
        """Not the question's own passage, and no answer inside (metric normalisation)."""
        if j == self.passage_of[record_index]:
            return False
        return not any(a in self._norm[j] for a in norm_answers)


def _norm_answers(answers: Sequence[str]) -> list[str]:
    # An answer that normalises to "" would exclude every passage; the metric would credit any
    # prediction for it anyway, so it carries no information about distractors.
    return [a for a in (normalize_answer(x) for x in answers) if a]


def random_distractors(
    pool: DistractorPool, record_index: int, answers: Sequence[str], k: int, rng: random.Random
) -> list[int]:
    """``k`` distinct allowed pool indices in draw order (rejection sampling from the pool)."""
    norm = _norm_answers(answers)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < k:
        if len(seen) == len(pool):
            raise DataError(
                f"only {len(chosen)} passages without an answer of question #{record_index}; "
                f"{k} distractors needed"
            )
        j = rng.randrange(len(pool))
        if j in seen:
            continue
        seen.add(j)
        if pool.allowed(j, record_index, norm):
            chosen.append(j)
    return chosen


def bm25_distractors(
    pool: DistractorPool, records: Sequence[QARecord], record_indices: Sequence[int], k: int
) -> dict[int, list[int]]:
    """For each record index, the ``k`` best-ranked allowed passages (BM25, rank order)."""
    import bm25s

    corpus = [f"{d.title} {d.text}" for d in pool.docs]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
    )

    def ranked(indices: Sequence[int], window: int) -> dict[int, list[int]]:
        queries = [records[i].question for i in indices]
        tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False)
        docs, _ = retriever.retrieve(tokens, k=window, show_progress=False, n_threads=1)
        out = {}
        for i, row in zip(indices, docs):
            norm = _norm_answers(records[i].answers)
            out[i] = [int(j) for j in row if pool.allowed(int(j), i, norm)][:k]
        return out

    result = ranked(record_indices, min(len(pool), 4 * k + 50))
    short = [i for i, picks in result.items() if len(picks) < k]
    if short:  # many top hits contain the answer: rank the whole pool for these questions
        result.update(ranked(short, len(pool)))
    for i, picks in result.items():
        if len(picks) < k:
            raise DataError(
                f"only {len(picks)} passages without an answer of question #{i}; "
                f"{k} distractors needed"
            )
    return result
