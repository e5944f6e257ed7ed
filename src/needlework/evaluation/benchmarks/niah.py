"""Needle in a haystack (Kamradt, 2023; sized and scored in the manner of RULER, Hsieh et al.,
2024, arXiv:2404.06654): one "special magic number" sentence hidden at a given depth of a haystack
filled to a given number of tokens of the model's own tokenizer.

Run:  needlework eval --config configs/eval/niah.yaml model.path=<model dir>
(the haystack is sized with the evaluated model's tokenizer; an API model needs ``tokenizer``)

The haystack is any local text file (split into sentences, cycled as needed) or a generated
filler; no download. Each (context length, depth) cell is fitted by search on the number of
haystack sentences so that the prompt, as the model sees it (chat template included), has at
most ``context_length`` tokens; the measured count is recorded as ``context_tokens``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field

from needlework.config import PositiveInt, config
from needlework.errors import ConfigError, DataError
from needlework.evaluation.base import Benchmark
from needlework.evaluation.benchmarks.common import Tag, user_turn
from needlework.evaluation.metrics import best_subspan_em, exact_match, first_line
from needlework.io import require_file
from needlework.records import Figure, Sample
from needlework.registry import benchmarks
from needlework.sources.haystack import FILLER, build_needle_item, split_sentences


@benchmarks.register("niah")
@config
class NIAH(Benchmark):
    """Needle in a haystack: accuracy over context length x needle depth."""

    tokenizer: str | None = None
    """The model's tokenizer as a ``load_counter`` spec (e.g. ``hf:<model dir>``); None: the
    evaluated model's own (its backend's ``token_counter()``; an API model needs one set)."""
    context_lengths: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (1024, 2048, 4096)
    """Target prompt sizes in tokens (prompt as the model sees it; the answer comes on top)."""
    depth_percents: Annotated[
        tuple[Annotated[float, Field(ge=0, le=100)], ...], Field(min_length=1)
    ] = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
    """Needle depths, in percent of the haystack (0 = first sentence, 100 = last)."""
    num_samples: PositiveInt = 1
    """Samples per cell, each with its own key and value."""
    haystack_path: str | None = None
    """A local UTF-8 text file (e.g. essays); None = the generated filler."""
    needle: Annotated[str, Field(pattern=r"\{key\}[\s\S]*\{value\}|\{value\}[\s\S]*\{key\}")] = (
        "The special magic number for {key} is {value}."
    )
    """The hidden sentence; must contain ``{key}`` and ``{value}``."""
    seed: int = 0
    """Chooses keys and values."""
    tag: Tag = ""
    """Appended to the label, to tell haystacks or needles apart."""
    max_new_tokens: PositiveInt = 32
    """The answer is one number."""

    group_by = ("context_length", "depth_percent")
    primary_metric = "best_subspan_em"
    report_rank = 40  # needs_token_counter (its tokenizer field): the haystack is sized in tokens

    def figures(self) -> tuple[Figure, ...]:
        return (
            Figure(
                "heatmap",
                heading="NIAH ({label}): {metric} by context length × needle depth",
                name="heatmap",
                x="context_length",
                y="depth_percent",
                x_axis="tokens",
                y_axis="depth",
                title="NIAH {label}: {variant}",
                caption="NIAH {label} {variant}",
                xlabel="Context length (tokens)",
                ylabel="Needle depth (% of context)",
            ),
        )

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        # First non-empty line only, as MDQA does: echoing the haystack must not find the needle.
        answer = first_line(output.strip())
        return {
            "best_subspan_em": best_subspan_em(answer, sample.answers),
            "exact_match": exact_match(answer, sample.answers),
        }

    def haystack_units(self) -> list[str]:
        if self.haystack_path is None:
            return list(FILLER)
        path = require_file(self.haystack_path, "a UTF-8 text file of haystack sentences")
        try:
            units = split_sentences(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            units = []
        if not units:
            raise DataError(f"{path}: expected UTF-8 text (the haystack's sentences)")
        return units

    def samples(self) -> Iterator[Sample]:
        if self.tokenizer is None:
            raise ConfigError(
                "set the model's tokenizer, e.g. hf:<model dir> (it sizes the haystack; "
                "hf and vllm models hand theirs over, API models cannot)",
                field="tokenizer",
            )
        from needlework.tokenization import load_counter

        counter = load_counter(self.tokenizer)
        units = self.haystack_units()
        for length in self.context_lengths:
            hint = 0
            for depth in self.depth_percents:
                for r in range(self.num_samples):
                    rng = random.Random(f"niah-{self.seed}-{length}-{depth}-{r}")
                    item = build_needle_item(
                        rng,
                        counter,
                        units,
                        context_length=length,
                        depth_percent=depth,
                        needle=self.needle,
                        hint=hint,
                    )
                    hint = item.num_units
                    meta = {
                        "context_length": length,
                        "depth_percent": depth,
                        "context_tokens": item.context_tokens,
                        "needle_key": item.key,
                        "haystack_units": item.num_units,
                        "tokenizer": self.tokenizer,
                    }
                    yield Sample(
                        f"niah-{self.seed}-{length}-{depth:g}-{r}",
                        user_turn(item.prompt),
                        (item.value,),
                        meta,
                    )
