"""The records that pass between stages and the run-folder files they are written in, declared
once: writers build them, every reader validates what it loads (``config.validate``, one line
naming the file and field) and trusts the type after. docs/formats.md §R renders these classes.

* evaluation run folder: ``config.yaml``, ``run.json`` (:class:`RunInfo`), ``predictions.jsonl``
  (a :class:`Prediction` per line), ``metrics.json`` (:class:`Metrics`);
* training run folder: ``config.yaml``, ``run.json``, ``model.json`` (:class:`TrainedModel`);
* dataset folder: ``config.yaml``, ``run.json``, ``manifest.json`` (:class:`Manifest`).

JSON files are records (pydantic models: optional parts, unknown keys refused unless said);
a :class:`Prediction` and a :class:`Figure` are frozen ``@config`` dataclasses (code builds
them); a chat turn is a :class:`Message` dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from needlework.config import config, invalid, validate

RECORD = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)
OPEN_RECORD = ConfigDict(extra="allow", use_attribute_docstrings=True, frozen=True)


# -- chat turns ------------------------------------------------------------------------------
@with_config(ConfigDict(use_attribute_docstrings=True))  # other keys are dropped, not refused
class Message(TypedDict):
    """One chat turn: a prompt is a list of them, a training conversation too."""

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


Turns = Annotated[list[Message], Field(min_length=1)]
"""What a model is asked: a non-empty list of chat turns."""


def _conversation(turns: list[Message]) -> list[Message]:
    """A training conversation: optional system turn, then user/assistant alternating, ending
    with a non-empty assistant answer."""
    first = 1 if turns[0]["role"] == "system" else 0
    expected = {i: ("user", "assistant")[(i - first) % 2] for i in range(first, len(turns))}
    wrong = next((i for i, role in expected.items() if turns[i]["role"] != role), None)
    loc: tuple[int | str, ...] = ()
    if wrong is not None:
        loc = (wrong, "role")
        why = (
            f"is {turns[wrong]['role']!r} but {expected[wrong]!r} was expected "
            "(optional system first, then user/assistant alternating)"
        )
    elif turns[-1]["role"] != "assistant":
        why = "the conversation must end with an assistant turn (the answer to train on)"
    elif not turns[-1]["content"].strip():
        loc = (len(turns) - 1, "content")
        why = "the final assistant turn is empty (nothing to train on)"
    else:
        return turns
    raise invalid(loc, why)


Conversation = Annotated[Turns, AfterValidator(_conversation)]


def validate_messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    """A training :data:`Conversation` (training data and the KV eval files alike); else one
    line naming ``where`` and the turn."""
    return tuple(validate(Conversation, messages, source=where, prefix="messages"))


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


# -- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One evaluation item: the prompt as chat turns, every accepted answer, and metadata."""

    id: str
    messages: tuple[Message, ...]
    answers: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@config
class Prediction:
    """One line of ``predictions.jsonl``: a model's output for one sample and its scores,
    appended as samples finish. Every writer (the runner, the lm-eval suite) builds its lines
    with this class; readers validate each line (``validate(Prediction, row, ...)``)."""

    id: str
    """Sample id, unique in the run (``mdqa-0-17``)."""
    benchmark: str
    """Benchmark label."""
    prompt_sha256: str
    """sha256 of the prompt as sent: runs are compared only on the same inputs."""
    output: str | None
    """The model's answer; None only for a skipped sample."""
    scores: Mapping[str, float]
    """Every score of this sample by metric name (none when skipped)."""
    answers: tuple[str, ...] | None = None
    """Every accepted answer (None: the scorer keeps them, as lm-eval does)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """The sample's metadata: the breakdown fields (``gold_position``, ``num_docs`` ...)."""
    messages: tuple[Message, ...] = ()
    """The prompt turns as the model got them (empty when the run kept only the hash)."""
    skipped: str | None = None
    """Why the sample was skipped (its prompt did not fit, ...)."""
    lm_eval: Mapping[str, Any] | None = None
    """lm-eval's own record of the doc (target, filtered answers, log-likelihoods)."""

    def __post_init__(self) -> None:
        if self.output is None and not self.skipped:
            raise ValueError("output: expected a str (only a skipped sample has none)")

    def to_json(self) -> dict[str, Any]:
        """The line as written; optional parts only when present (older readers ignore them)."""
        row: dict[str, Any] = {
            "id": self.id,
            "benchmark": self.benchmark,
            "prompt_sha256": self.prompt_sha256,
            "output": self.output,
            "scores": dict(self.scores),
        }
        if self.answers is not None:
            row["answers"] = list(self.answers)
        row["meta"] = dict(self.meta)
        if self.messages:
            row["messages"] = [{"role": m["role"], "content": m["content"]} for m in self.messages]
        if self.skipped is not None:
            row["skipped"] = self.skipped
        if self.lm_eval is not None:
            row["lm_eval"] = dict(self.lm_eval)
        return row


Axis = Literal["value", "position", "tokens", "depth"]


@config
class Figure:
    """How reports draw one breakdown of a benchmark; the benchmark declares it (``figures()``)
    and the runner records it in metrics.json, so a new benchmark gets its figure with no edit
    in ``reporting/``.

    ``kind`` "line": the primary metric (and each secondary one, as an extra panel) over the
    breakdown ``x``, one line per model, with a table and CSV; "heatmap": a ``y`` × ``x`` grid
    per model from per-sample records; "scores": a table of every recorded score per model
    (suites such as the lm-eval general benchmarks). Texts may use ``{label}``, ``{metric}``
    (the primary metric), ``{metrics}`` (all plotted ones) and, in heatmaps, ``{variant}``.
    """

    kind: Literal["line", "heatmap", "scores"]
    """What is drawn (above)."""
    heading: str
    """Section heading, e.g. ``MDQA ({label}): accuracy by gold document position``."""
    name: str
    """File stem after the label: ``by_position`` gives figures/tables ``<label>_by_position``."""
    x: str = ""
    """Breakdown (``group_by``/meta field) along the x axis, or the heatmap's columns."""
    y: str = ""
    """Heatmap rows."""
    x_axis: Axis = "value"
    """How x values are shown: ``value`` as they are, ``position`` 0-based shown 1-based (more
    than 20 become depth bins, see ``bins``), ``tokens`` as 1K/128K, ``depth`` as a percentage."""
    y_axis: Axis = "value"
    """How heatmap rows are shown (same choices)."""
    title: str = ""
    """Figure title."""
    caption: str = ""
    """Image alt text / HTML caption."""
    xlabel: str = ""
    """x-axis label; for ``position`` axes the default names ``what``."""
    ylabel: str = ""
    """Heatmap y-axis label."""
    what: str = ""
    """What a ``position`` counts, e.g. ``gold document``."""
    bins: str = ""
    """Breakdown shown instead of ``x`` when it has more than 20 positions (e.g. gold_depth_bin)."""
    size: str = ""
    """Meta field with the number of positions, to bin a position by depth when ``bins`` is
    missing (e.g. ``num_docs``)."""
    shared: str = ""
    """Labels declaring the same ``shared`` name are drawn together: one figure named so (one
    panel per label), one section with a block per label."""
    panel: str = ""
    """This label's panel title in a shared figure, after the label: ``flenqa (no CoT)``."""

    def __post_init__(self) -> None:
        need = "x" if self.kind != "scores" and not self.x else ""
        need = need or ("y" if self.kind == "heatmap" and not self.y else "")
        if need:
            raise ValueError(f"{need}: a {self.kind} figure must set {need} (a breakdown field)")

    def to_json(self) -> dict[str, str]:
        """The fields that differ from their defaults (what metrics.json records)."""
        return {
            name: value
            for name, spec in self.__dataclass_fields__.items()
            if (value := getattr(self, name)) != spec.default
        }

    def text(self, template: str, **values: str) -> str:
        """``template`` with its ``{label}``/``{metric}``/... filled in."""
        return template.format_map(_Keep(values))


class _Keep(dict):
    """format_map values that leave unknown ``{names}`` as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Mean(BaseModel):
    """A score's mean over samples with its 95% CI (Wilson for 0/1 scores, bootstrap
    otherwise)."""

    model_config = RECORD
    mean: float
    """Mean over the samples that have this score."""
    ci_low: float | None = None
    """Lower end of the 95% CI."""
    ci_high: float | None = None
    """Upper end of the 95% CI."""
    n: int | None = None
    """Samples averaged."""
    lm_eval: float | None = None
    """lm-eval's own aggregate of this score (suites)."""
    lm_eval_stderr: float | None = None
    """lm-eval's standard error of it (suites)."""


class Task(BaseModel):
    """A suite's task in metrics.json ``tasks``; lm-eval's own record of the task (its version,
    shots, aggregate scores ...) is kept beside these fields as written."""

    model_config = OPEN_RECORD
    primary_metric: str = ""
    """The task's main score (``<task>/<metric>``)."""
    caveat: str | None = None
    """Why its numbers are not directly comparable with the paper's, if they are not."""


class Metrics(BaseModel):
    """``metrics.json``: a run's aggregates, written when the run finishes. Group keys are
    strings; ``figures`` and ``report_rank`` are the benchmark's own declaration, from which
    reports draw every section, knowing no benchmark by name."""

    model_config = RECORD
    benchmark: str
    """The benchmark's label (``mdqa_20docs``: runs are compared within one label); a suite
    writes its registered name here and its label in ``label``."""
    benchmark_name: str | None = None
    """The registered name (``mdqa``): reports choose a run's sections by it."""
    label: str | None = None
    """A suite's label."""
    model: str | dict[str, Any] | None = None
    """The model's short id (``hf:./m``)."""
    n: int | None = None
    """Samples scored."""
    n_skipped: int = 0
    """Samples skipped (counted, never scored)."""
    primary_metric: str
    """The score reports lead with."""
    secondary_metrics: list[str] = []
    """Scores shown beside it (``format_match``, ``unsupported`` ...)."""
    metrics: dict[str, Mean]
    """Every score over all samples."""
    by: dict[str, dict[str, dict[str, Mean]]] = {}
    """``by[field][value][metric]``: the same per value of each breakdown field."""
    tasks: dict[str, Task] = {}
    """A suite's tasks by key; empty for a benchmark."""
    caveats: dict[str, str] = {}
    """A suite's tasks that are not comparable with the paper, and why."""
    comparable_with_paper: bool | None = None
    """A suite: whether every task is."""
    settings: dict[str, Any] = {}
    """A suite's run settings (lm-eval arguments)."""
    report_rank: int = 100
    """Where its report sections go, lowest first."""
    figures: list[Any] | None = None
    """How reports draw its breakdowns (a :class:`Figure` each, checked one by one so a broken
    one leaves out only itself); None in runs written before figures were recorded."""

    @model_validator(mode="after")
    def _primary_recorded(self) -> Metrics:
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric: {self.primary_metric!r} has no entry in 'metrics'")
        return self


class RunInfo(BaseModel):
    """``run.json``: what every run records next to its results (versions, command, status);
    stages add their own fields (token counts, usage, training settings ...)."""

    model_config = OPEN_RECORD
    needlework_version: str | None = None
    """needlework's version."""
    git_revision: str | None = None
    """The checkout's commit, when run from a git clone."""
    command: list[str] = []
    """The command line."""
    started: str | None = None
    """Start time (UTC, ISO 8601); ``finished``, ``resumed`` likewise."""
    versions: dict[str, str] = {}
    """Installed versions of the libraries that shape results."""
    threads: dict[str, Any] = {}
    """CPU threads used."""
    status: str | None = None
    """``running``, ``complete`` or ``interrupted`` (with ``error``)."""
    model: str | dict[str, Any] | None = None
    """Evaluation: the model's short id; training: the model.json written."""
    benchmark: str | None = None
    """Evaluation: the benchmark's label."""
    variant: str | None = None
    """What a recipe compares (its variant name); reports group runs by it."""
    seed: int | None = None
    """The variant's training seed."""


class TrainedModel(BaseModel):
    """``model.json``, written last by ``needlework train``: how to load the result for
    inference. Its other keys are the backend's own config fields (docs/formats.md §C); a path
    inside the run folder is written ``./model`` (relative to the model.json)."""

    model_config = OPEN_RECORD
    backend: Annotated[str, Field(validation_alias=AliasChoices("backend", "name"))]
    """The inference backend (``hf``, ``openai`` ...); ``name`` is read as well."""
    path: str | None = None
    """Model folder or hub id (``hf``)."""
    adapter: str | None = None
    """LoRA adapter folder (``hf``)."""
    model: str | None = None
    """Finetuned model name (``openai``)."""


class HeldOut(BaseModel):
    """The real benchmark questions a dataset used (any split, any seed), so evaluation never
    asks them."""

    model_config = RECORD
    normalisation: str | None = None
    """How questions are compared (``needlework.heldout.question_key``)."""
    count: int | None = None
    """Number of questions."""
    questions: list[str]
    """The questions, sorted, as written."""


class Manifest(BaseModel):
    """``manifest.json`` of a dataset written by ``needlework generate``. ``seeds`` makes a
    file a dataset manifest; a hand-made one listing only ``held_out`` questions is read too."""

    model_config = RECORD
    seeds: dict[str, dict[str, Any]]
    """Per seed: units per prompt, and per split the counts and token statistics."""
    format: str | None = None
    """``needlework-dataset/1``."""
    generator: str | None = None
    """The generator unit's name."""
    tokenizer: str | None = None
    """Token counter spec the lengths are measured in."""
    max_context_tokens: int | None = None
    """The prompt budget."""
    reserve_tokens: int | None = None
    """Tokens kept free of the budget for the answer."""
    shard: tuple[int, int] | None = None
    """``[index, count]`` of a shard; None for a whole dataset."""
    files: dict[str, dict[str, Any]] = {}
    """Every file by relative path: its ``sha256`` and ``bytes``."""
    held_out: HeldOut | None = None
    """Real benchmark questions used (baseline generators only)."""
