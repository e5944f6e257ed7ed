"""General-knowledge chat rows from MMLU's ``dev`` and ``val`` splits: the local instruction
data that mixing experiments blend into the synthetic retrieval data (the paper's future work,
§6: "mixing with instruction data").

Run:  needlework generate --config configs/datagen/mmlu_chat_smollm2.yaml

A row is one question with its four choices; the answer is the correct letter and its text.
Only ``dev`` and ``val`` are read, never ``test``, which the general suite evaluates; the prompt
is not the suite's (``Answer:`` scored by log-likelihood), so the rows teach answering, not the
evaluation format. Questions come in a seeded order, one per sample of a seed, so ``num_train``
+ ``num_eval`` distinct questions are used (1,816 in the two splits, fewer after the length cap).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from needlework.config import Distinct, Fraction, NonEmptyStr, config
from needlework.datagen.base import GoldFractions, Slot, Task, load_prompt, slot_item
from needlework.errors import UserError
from needlework.registry import generators

TARBALL = "mmlu_data_csv.tar.gz"
DEFAULT_DATA_PATH = "data/mmlu"
SPLITS: tuple[Literal["dev", "val"], ...] = ("dev", "val")
LETTERS = "ABCD"


@generators.register("mmlu_chat")
@config
class MmluChat(GoldFractions):
    """One MMLU dev/val question and its choices -> the correct letter and choice text."""

    data_path: NonEmptyStr = DEFAULT_DATA_PATH
    """The MMLU release tarball (``mmlu_data_csv.tar.gz``) or a folder holding it (default looked
    for in ``$NEEDLEWORK_DATA/mmlu``, then ``data/mmlu``)."""
    splits: Annotated[tuple[Literal["dev", "val"], ...], Field(min_length=1), Distinct] = SPLITS
    """Which of the release's non-test splits to draw from (never test, which the general suite
    evaluates)."""
    max_question_words: Annotated[int, Field(ge=5)] = 120
    """Questions (choices included) longer than this are never used, so rows stay short."""
    frac_0: Fraction = 0.0
    """Unused (one question per prompt): kept 0 so the gold position is always 0."""
    frac_top5: Fraction = 0.0
    """Unused, as ``frac_0``."""

    unit: ClassVar[str] = "questions"

    @property
    def num_units(self) -> int:
        return 1

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        from needlework.sources.data import locate

        where = "generator.data_path"
        tarball = locate(self.data_path, DEFAULT_DATA_PATH, "mmlu", (TARBALL,), field=where)
        docs = _questions(str(tarball), self.splits, self.max_question_words)
        have = f"{{n}} MMLU {'+'.join(self.splits)} questions are short enough"
        doc = slot_item(docs, rng, slot, "mmlu_chat", have, "generator.max_question_words")
        a, b, c, d = (str(x).strip() for x in doc["choices"])
        question = doc["question"].strip()
        prompt = load_prompt("mmlu_chat").format(question=question, a=a, b=b, c=c, d=d)
        letter = LETTERS[doc["answer"]]
        return Task(
            prompt,
            f"{letter}. {(a, b, c, d)[doc['answer']]}",
            {"subject": doc["subject"], "mmlu_split": doc["split"], "answer_letter": letter},
        )


@functools.lru_cache(maxsize=4)
def _questions(
    tar_path: str, splits: tuple[str, ...], max_words: int
) -> tuple[dict[str, Any], ...]:
    from needlework.sources.mmlu import mmlu_csv_split

    out = []
    for split in splits:
        for doc in mmlu_csv_split(Path(tar_path), split):
            words = len(" ".join([doc["question"], *doc["choices"]]).split())
            if words <= max_words:
                out.append({**doc, "split": split})
    if not out:
        raise UserError(f"{tar_path}: no {'+'.join(splits)} question within max_question_words")
    return tuple(out)
