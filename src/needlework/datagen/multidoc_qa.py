"""MultidocQA-style finetuning data: an NQ-Open question with its gold passage among distractor
passages, in the Lost-in-the-Middle prompt; one of the paper's factual baselines (spec §4.4,
Table 2), built offline from the oracle file MDQA reads.

Run:  needlework generate --config configs/datagen/multidoc_qa_smollm2.yaml

The answer is the short NQ answer, or (``answer_style: restate``) the supporting sentence of
the gold passage first, then the answer, as MultidocQA-style data restates the evidence.
Questions and distractors come from the training half of a fixed passage partition, and every
question whose passage a prompt shows is listed in the manifest's ``held_out``
(:mod:`needlework.datagen.passages`).
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from needlework.config import config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.passages import (
    PassageTask,
    bm25_indices,
    distractor_indices,
    supporting_sentence,
)
from needlework.registry import generators
from needlework.sources.mdqa import insert_gold, qa_prompt


@generators.register("multidoc_qa")
@config
class MultidocQA(PassageTask):
    """NQ-Open question, gold passage among distractors, Lost-in-the-Middle prompt."""

    unit: ClassVar[str] = "docs"

    num_docs: UnitCount | None = 20
    """Passages per prompt, gold included (MDQA's 20); null = as many as fit the budget."""
    distractors: Literal["random", "bm25"] = "random"
    """Random passages, or the BM25-best passages for the question (hard negatives)."""
    answer_style: Literal["short", "restate"] = "short"
    """``short``: the NQ answer; ``restate``: the supporting sentence, then the answer."""

    @property
    def num_units(self) -> int | None:
        return self.num_docs

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        part = self.partition()
        asked = part.question(rng, slot, "multidoc_qa")
        rec = part.records[asked]
        if self.distractors == "bm25":
            picks = bm25_indices(part, asked, num_units - 1)
        else:
            picks = distractor_indices(part, asked, num_units - 1, rng)
        gold = part.passage(asked)
        docs = insert_gold([part.passage(j) for j in picks], gold, gold_position)
        answer = rec.answers[0]
        sentence = supporting_sentence(gold.text, rec.answers)
        if self.answer_style == "restate":
            answer = load_prompt("multidoc_qa.restate").format(
                doc_number=gold_position + 1, sentence=sentence or gold.text, answer=answer
            )
        return Task(
            qa_prompt(rec.question, docs),
            answer,
            {
                "num_docs": num_units,
                "question": rec.question,
                "answers": list(rec.answers),
                "gold_title": gold.title,
                "supporting_sentence": sentence,
                "distractors": self.distractors,
                "answer_style": self.answer_style,
            },
            part.owners([asked, *picks]),
        )
