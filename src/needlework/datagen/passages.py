"""Real passages and questions for the factual baseline generators (not a unit).

The paper compares its synthetic data with factual long-context data (MultidocQA, IN2,
needle-in-a-haystack; spec §4.4). needlework builds such data offline from the file MDQA
already reads: the Lost-in-the-Middle oracle file (2,655 NQ-Open questions, each with its gold
passage). To keep evaluation honest the questions are split once, by a fixed seeded partition,
into a *training* part and an *evaluation* part: a baseline generator takes its questions, and
its distractor or filler passages, from the training part only, and records that whole part as
``held_out`` in the dataset manifest, so MDQA and NQ-Open given the dataset evaluate only on
questions whose passages no training prompt ever showed. Reading, verification and answer
normalisation are MDQA's own (:mod:`needlework.sources.data`,
:func:`needlework.sources.answers.contains_answer`), so "the passage supports the answer"
means what the benchmark's metric means.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from needlework.config import Fraction, NonEmptyStr, config
from needlework.datagen.base import GoldFractions, Slot, slot_item
from needlework.errors import DataError, UserError
from needlework.sources.answers import contains_answer, normalize_answer
from needlework.sources.data import (
    Document,
    QARecord,
    litm_checksums,
    locate,
    read_qa_records,
    verify_file,
)

ORACLE_NAME = "nq-open-oracle.jsonl.gz"
ORACLE_UPSTREAM = f"qa_data/{ORACLE_NAME}"
DEFAULT_DATA_PATH = "data/lost-in-the-middle"


@config
class PassageTask(GoldFractions):
    """The fields every factual baseline generator shares: where the oracle file is and how its
    passages are partitioned (the same partition for every generator given the same fields). A
    generator subclasses it (frozen dataclass) and adds its own fields."""

    data_path: NonEmptyStr = DEFAULT_DATA_PATH
    """The Lost-in-the-Middle oracle file or a folder holding it (default looked for in
    ``$NEEDLEWORK_DATA``, then ``data/``)."""
    train_share: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """Share of the oracle's passages reserved for training data (the rest stays unseen)."""
    partition_seed: int = 0
    """Seeds the train/held-out passage partition (the same for every baseline generator)."""
    max_passage_words: Annotated[int, Field(ge=10)] = 100
    """Passages longer than this are never used (the oracle chunks passages to ~100 words; a
    few longer ones, tables mostly, would make prompts swing in length)."""
    frac_0: Fraction = 0.0
    """Fraction of samples with the gold unit forced first (0: depth uniform)."""
    frac_top5: Fraction = 0.0
    """Further fraction with the gold unit among the first positions (0)."""

    def partition(self) -> Partition:
        """The oracle file's passages, split as these fields say (read once per process)."""
        return load_partition(
            self.data_path, self.train_share, self.partition_seed, self.max_passage_words
        )


def oracle_path(data_path: str) -> Path:
    """The oracle file under ``data_path`` (a file or folder); the default folder is looked for
    in ``$NEEDLEWORK_DATA`` and ``data/`` as MDQA does."""
    return locate(
        data_path,
        DEFAULT_DATA_PATH,
        "lost-in-the-middle",
        (ORACLE_UPSTREAM, ORACLE_NAME),
        field="generator.data_path",
        search=True,
    )


@dataclass(frozen=True, eq=False)
class Partition:
    """The oracle records and the training part of the fixed question partition."""

    records: tuple[QARecord, ...]
    train: tuple[int, ...]
    """Record indices reserved for training (ascending)."""
    short: tuple[int, ...]
    """Training indices whose passage has at most ``max_passage_words`` words: the passages
    prompts are made of (the oracle's passages are chunked to ~100 words; a few are tables
    several times longer, which would make the unit count swing)."""
    eligible: tuple[int, ...]
    """Short training indices whose passage contains an answer (the only ones ever asked)."""

    def question(self, rng: random.Random, slot: Slot | None, salt: str) -> int:
        """The record asked by ``slot``: one distinct question per sample of a seed (a seeded
        order of the eligible questions); probes (no slot) draw one from ``rng``."""
        have = "the training partition has {n} usable questions"
        return slot_item(self.eligible, rng, slot, salt, have, "generator.train_share")

    def passage(self, index: int) -> Document:
        return _gold(self.records[index])

    def owners(self, indices: list[int]) -> tuple[str, ...]:
        """Every question whose gold passage is one of ``indices``' passages (several questions
        can share a passage): what a prompt showing those passages must hold out."""
        texts = {self.passage(i).text for i in indices}
        return tuple(sorted({q for t in texts for q in self.by_text[t]}))

    @functools.cached_property
    def by_text(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for i in self.train:
            out.setdefault(self.passage(i).text, []).append(self.records[i].question)
        return {t: tuple(qs) for t, qs in out.items()}


@functools.lru_cache(maxsize=4)
def load_partition(
    data_path: str, train_share: float, partition_seed: int, max_passage_words: int = 100
) -> Partition:
    """Read and verify the oracle file, split its questions, keep the answer-bearing ones."""
    path = oracle_path(data_path)
    pinned = {Path(k).name: v for k, v in litm_checksums().items()}
    if path.name in pinned:
        verify_file(path, pinned[path.name])
    records = tuple(read_qa_records(path))
    # Split by passage, not by question: questions sharing a gold passage fall on one side, so
    # no evaluation question's passage can appear in a training prompt.
    passages = sorted({_gold(r).text for r in records})
    rng = random.Random(f"needlework-partition:{partition_seed}")
    taken = set(rng.sample(passages, int(len(passages) * train_share)))
    train = tuple(i for i, r in enumerate(records) if _gold(r).text in taken)
    short = tuple(i for i in train if len(_gold(records[i]).text.split()) <= max_passage_words)
    eligible = tuple(i for i in short if _askable(records[i]))
    if len(eligible) < 2:
        raise DataError(f"{path}: fewer than 2 training questions with an answer in their passage")
    return Partition(records, train, short, eligible)


def _askable(rec: QARecord) -> bool:
    """The gold passage supports an answer, and no answer is a single character (the metric
    would credit almost any text for it, and almost no passage could be a distractor)."""
    if any(len(normalize_answer(a)) < 2 for a in rec.answers):
        return False
    return contains_answer(_gold(rec).text, rec.answers)


def _gold(rec: QARecord) -> Document:
    return rec.documents[rec.gold_index or 0]


def distractor_indices(part: Partition, asked: int, k: int, rng: random.Random) -> list[int]:
    """``k`` distinct training-part records whose passages hold none of ``asked``'s answers."""
    answers = part.records[asked].answers
    gold_text = part.passage(asked).text
    chosen: list[int] = []
    seen = {asked}
    texts = {gold_text}
    pool = part.short
    while len(chosen) < k:
        if len(seen) >= len(pool):
            raise UserError(
                f"num_docs: only {len(chosen)} passages of the training partition lack the "
                f"answer to '{part.records[asked].question}'; {k} distractors needed"
            )
        j = pool[int(rng.random() * len(pool))]
        if j in seen:
            continue
        seen.add(j)
        doc = part.passage(j)
        if doc.text not in texts and not contains_answer(f"{doc.title} {doc.text}", answers):
            chosen.append(j)
            texts.add(doc.text)
    return chosen


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    """Sentence split on end punctuation followed by a capital or digit (good enough for
    Wikipedia passages; a passage without one is one sentence)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def supporting_sentence(text: str, answers: tuple[str, ...]) -> str | None:
    """The first sentence of ``text`` that contains an answer (metric normalisation)."""
    for sentence in sentences(text):
        if contains_answer(sentence, answers):
            return sentence
    return None


def bm25_indices(part: Partition, asked: int, k: int) -> list[int]:
    """The ``k`` BM25-best training-part passages for ``asked``'s question that hold none of
    its answers, in rank order (MDQA's own BM25 distractors, over the training part only)."""
    return list(_bm25_all(part, k)[asked])


@functools.lru_cache(maxsize=4)
def _bm25_all(part: Partition, k: int) -> dict[int, tuple[int, ...]]:
    """BM25 distractors for every eligible question at once (one index, one batched query)."""
    from needlework.sources.mdqa import DistractorPool, bm25_distractors

    records = [part.records[i] for i in part.short]
    pool = DistractorPool(records)
    owner: dict[int, int] = {}  # pool passage -> first training record showing it
    for local, passage in enumerate(pool.passage_of):
        owner.setdefault(passage, part.short[local])
    local_of = {g: j for j, g in enumerate(part.short)}
    picks = bm25_distractors(pool, records, [local_of[i] for i in part.eligible], k)
    return {part.short[j]: tuple(owner[p] for p in ps) for j, ps in picks.items()}
