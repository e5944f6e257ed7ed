"""IN2-style finetuning data ("Make Your LLM Fully Utilize the Context", An et al., 2024,
arXiv:2404.16811): one short passage that answers the question, placed at a random depth
inside a long context of other passages; one of the paper's factual baselines (spec §4.4).

Run:  needlework generate --config configs/datagen/in2_style_smollm2.yaml

Unlike ``multidoc_qa`` the context is plain running text (no document numbers or titles) and
the question does not say where to look, so the model must find the fine-grained fact itself;
the target is the short NQ answer (loss on the answer only, as training always is here).
Questions and context passages come from the training half of the fixed passage partition and
are listed in the manifest's ``held_out`` (:mod:`needlework.datagen.passages`).
"""

from __future__ import annotations

import random
from typing import ClassVar

from needlework.config import config
from needlework.datagen.base import Slot, Task, UnitCount, load_prompt
from needlework.datagen.passages import (
    PassageTask,
    distractor_indices,
)
from needlework.registry import generators


@generators.register("in2_style")
@config
class In2Style(PassageTask):
    """One answering passage at a random depth of a long plain-text context; short answer."""

    unit: ClassVar[str] = "passages"

    num_passages: UnitCount | None = None
    """Passages per context, the answering one included; null = as many as fit the budget."""

    @property
    def num_units(self) -> int | None:
        return self.num_passages

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        part = self.partition()
        asked = part.question(rng, slot, "in2_style")
        rec = part.records[asked]
        others = distractor_indices(part, asked, num_units - 1, rng)
        order = [*others[:gold_position], asked, *others[gold_position:]]
        context = "\n\n".join(part.passage(i).text for i in order)
        prompt = load_prompt("in2_style").format(context=context, question=rec.question)
        return Task(
            prompt,
            rec.answers[0],
            {
                "num_passages": num_units,
                "question": rec.question,
                "answers": list(rec.answers),
                "gold_title": part.passage(asked).title,
            },
            part.owners(order),
        )
