"""Needle-in-a-haystack finetuning data (Kamradt, 2023): one sentence stating an invented fact,
hidden at a random depth of filler or real passages, and a question about it; one of the
paper's factual baselines (spec §4.4, "a fact sentence inserted at a random depth").

Run:  needlework generate --config configs/datagen/niah_train_smollm2.yaml

The facts are synthetic (invented place names, seeded values, templates in
``prompts/niah_train.facts.txt``), so the question cannot be answered from memory, and their
wording differs from the ``niah`` benchmark's "special magic number" needle, so training on them
does not teach that benchmark's exact sentence. The haystack is the NIAH benchmark's bland
filler, or (``haystack: passages``) Wikipedia passages from the training half of the passage
partition, whose questions are then listed in the manifest's ``held_out``.
"""

from __future__ import annotations

import functools
import random
from typing import ClassVar, Literal

from needlework.config import PositiveInt, config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.passages import PassageTask, sentences
from needlework.registry import generators
from needlework.sources.haystack import FILLER

_SYLLABLES = ("bar", "vel", "mor", "tan", "esk", "lin", "dor", "quo", "ram", "sil", "ven", "thal",
              "ock", "rud", "pim", "ast", "orn", "wex", "ul", "gar")  # fmt: skip
_VALUES = {
    "colour": ("green", "blue", "yellow", "crimson", "violet", "orange", "grey", "white"),
    "animal": ("heron", "badger", "otter", "lynx", "stork", "beaver", "falcon", "hare"),
    "food": ("plum cakes", "rye loaves", "honey buns", "walnut tarts", "cheese pies", "fig rolls"),
}


@functools.cache
def fact_templates() -> tuple[tuple[str, str, str], ...]:
    """(value kind, statement, question) rows of ``prompts/niah_train.facts.txt``."""
    rows = []
    for line in load_prompt("niah_train.facts").splitlines():
        kind, statement, question = line.split("|")
        rows.append((kind, statement, question))
    return tuple(rows)


def invent_fact(rng: random.Random) -> tuple[str, str, str, str]:
    """(statement, question, answer, entity) of a fresh invented fact."""
    kind, statement, question = fact_templates()[int(rng.random() * len(fact_templates()))]
    parts = [
        _SYLLABLES[int(rng.random() * len(_SYLLABLES))] for _ in range(2 + int(rng.random() * 2))
    ]
    entity = "".join(parts).capitalize()
    if kind == "year":
        value = str(1200 + int(rng.random() * 800))
    elif kind == "number":
        value = str(12 + int(rng.random() * 9000))
    else:
        choices = _VALUES[kind]
        value = choices[int(rng.random() * len(choices))]
    return (
        statement.format(entity=entity, value=value),
        question.format(entity=entity),
        value,
        entity,
    )


@generators.register("niah_train")
@config
class NIAHTrain(PassageTask):
    """An invented fact hidden at a random depth of filler or real passages; answer the fact."""

    unit: ClassVar[str] = "passages"

    haystack: Literal["filler", "passages"] = "filler"
    """``filler``: the NIAH benchmark's bland sentences; ``passages``: Wikipedia passages of
    the oracle file's training partition (their questions are then held out; ``data_path``,
    ``train_share``, ``partition_seed`` and ``max_passage_words`` apply only then)."""
    num_passages: UnitCount | None = None
    """Haystack units per prompt (a passage, or ``filler_sentences`` filler sentences); null =
    as many as fit the budget."""
    filler_sentences: PositiveInt = 5
    """Sentences per filler unit."""

    @property
    def num_units(self) -> int | None:
        return self.num_passages

    def _units(self, rng: random.Random, n: int) -> tuple[list[str], tuple[str, ...]]:
        if self.haystack == "filler":
            units = [
                " ".join(
                    FILLER[int(rng.random() * len(FILLER))] for _ in range(self.filler_sentences)
                )
                for _ in range(n)
            ]
            return units, ()
        part = self.partition()
        picks: list[int] = []
        texts: set[str] = set()
        while len(picks) < n:
            j = part.short[int(rng.random() * len(part.short))]
            if part.passage(j).text not in texts:
                picks.append(j)
                texts.add(part.passage(j).text)
        return [part.passage(j).text for j in picks], part.owners(picks)

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        statement, question, answer, entity = invent_fact(rng)
        units, owners = self._units(rng, num_units)
        split = sentences(units[gold_position])
        at = int(rng.random() * (len(split) + 1))
        units[gold_position] = " ".join([*split[:at], statement, *split[at:]])
        prompt = load_prompt("niah_train").format(context="\n\n".join(units), question=question)
        return Task(
            prompt,
            answer,
            {
                "num_passages": num_units,
                "needle": statement,
                "question": question,
                "answers": [answer],
                "entity": entity,
                "haystack": self.haystack,
                "needle_sentence_index": at,
            },
            owners,
        )
