"""The records that pass between stages, and the on-disk formats they are written in.

Evaluation run folder (written by ``evaluation/runner.py``, read by ``reporting/``)::

    <run>/config.yaml         resolved EvalConfig
    <run>/run.json            versions, git revision, command, model and benchmark ids
    <run>/predictions.jsonl   one line per sample (below), appended as samples finish
    <run>/metrics.json        aggregate (below), rewritten atomically at the end

predictions.jsonl line::

    {"id": "mdqa-0-17", "benchmark": "mdqa", "prompt_sha256": "…", "output": "…",
     "scores": {"best_subspan_em": 1.0, "abstained": 0.0, "unsupported": 0.0},
     "meta": {"gold_position": 4, "num_docs": 20, …}}

metrics.json::

    {"benchmark": "mdqa", "model": "hf:./m", "n": 1200, "primary_metric": "best_subspan_em",
     "secondary_metrics": ["unsupported", "wrong_answer", "abstained"],
     "metrics": {"best_subspan_em": {"mean": 0.53, "ci_low": 0.50, "ci_high": 0.56, "n": 1200}},
     "by": {"gold_position": {"0": {"best_subspan_em": {"mean": …, "ci_low": …, …}}, …}}}

Confidence intervals are 95% (Wilson for 0/1 scores, bootstrap otherwise); group keys are strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict


class Message(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Sample:
    """One evaluation item: the prompt as chat turns, every accepted answer, and metadata."""

    id: str
    messages: tuple[Message, ...]
    answers: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    """A model's output for one sample with its per-sample scores."""

    sample_id: str
    output: str
    scores: Mapping[str, float]
    meta: Mapping[str, Any] = field(default_factory=dict)


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict]:
    """The conversation with its system turn set to ``system_prompt`` (None: left as it is).

    Training and inference both call this with the same setting, so a model is evaluated with
    the system turn it was trained with. None keeps the chat template's own behaviour (SmolLM2's
    template inserts its default system prompt when there is none); a string replaces any system
    turn, and "" gives an empty system turn, the closest a template that injects a default allows
    to "no system prompt".
    """
    if system_prompt is None:
        return [dict(m) for m in messages]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": system_prompt}, *rest]
