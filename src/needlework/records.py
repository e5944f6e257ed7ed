"""The records that pass between stages, and the on-disk formats they are written in.

Evaluation run folder (written by ``evaluation/runner.py``, read by ``reporting/``)::

    <run>/config.yaml         resolved EvalConfig
    <run>/run.json            versions, git revision, command, model and benchmark ids
    <run>/predictions.jsonl   one line per sample (below), appended as samples finish
    <run>/metrics.json        aggregate (below), rewritten atomically at the end

predictions.jsonl line::

    {"id": "mdqa-0-17", "benchmark": "mdqa", "prompt_sha256": "…", "output": "…",
     "scores": {"best_subspan_em": 1.0, "abstained": 0.0, "unsupported": 0.0},
     "answers": ["…"], "meta": {"gold_position": 4, "num_docs": 20, …},
     "messages": [{"role": "user", "content": "…"}]}

(:class:`Prediction` writes and checks these lines.)

metrics.json::

    {"benchmark": "mdqa", "model": "hf:./m", "n": 1200, "primary_metric": "best_subspan_em",
     "secondary_metrics": ["unsupported", "wrong_answer", "abstained"],
     "metrics": {"best_subspan_em": {"mean": 0.53, "ci_low": 0.50, "ci_high": 0.56, "n": 1200}},
     "by": {"gold_position": {"0": {"best_subspan_em": {"mean": …, "ci_low": …, …}}, …}},
     "report_rank": 10, "figures": [{"kind": "line", "x": "gold_position", …}]}

``figures`` and ``report_rank`` are the benchmark's own declaration (:class:`Figure`): reporting
draws every section from them and knows no benchmark by name.

Confidence intervals are 95% (Wilson for 0/1 scores, bootstrap otherwise); group keys are strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict


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
    """One line of predictions.jsonl: a model's output for one sample and its scores.

    Every writer (the runner, the lm-eval suite) builds its lines with this class and every
    reader checks them with :meth:`check`, so the format has one definition. ``messages`` are
    the prompt turns as the model got them (empty when the run kept only ``prompt_sha256``);
    a skipped sample has ``output`` None, no scores and ``skipped`` saying why.
    """

    id: str
    benchmark: str
    prompt_sha256: str
    output: str | None
    scores: Mapping[str, float]
    answers: tuple[str, ...] | None = None
    """Every accepted answer (None: the scorer keeps them, as lm-eval does)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    skipped: str | None = None
    lm_eval: Mapping[str, Any] | None = None
    """lm-eval's own record of the doc (target, filtered answers, log-likelihoods)."""

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

    @staticmethod
    def check(row: Mapping[str, Any], where: str, *, need_hash: bool = True) -> None:
        """DataError naming ``where`` and the field when ``row`` is not a prediction line."""
        from needlework.errors import DataError

        for key, kind in (("id", str), ("prompt_sha256", str), ("scores", dict)):
            if key == "prompt_sha256" and not need_hash:
                continue
            if not isinstance(row.get(key), kind):
                raise DataError(f"{where}: field '{key}' missing or not a {kind.__name__}")
        if not row.get("skipped") and not isinstance(row.get("output"), str):
            raise DataError(f"{where}: field 'output' missing or not a str")
        if "messages" in row and not isinstance(row["messages"], list):
            raise DataError(f"{where}: field 'messages' should be a list of chat turns")


AXES = ("value", "position", "tokens", "depth")


@dataclass(frozen=True)
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
    heading: str
    """Section heading, e.g. ``MDQA ({label}): accuracy by gold document position``."""
    name: str
    """File stem after the label: ``by_position`` gives figures/tables ``<label>_by_position``."""
    x: str = ""
    """Breakdown (``group_by``/meta field) along the x axis, or the heatmap's columns."""
    y: str = ""
    """Heatmap rows."""
    x_axis: str = "value"
    """How x values are shown: ``value`` as they are, ``position`` 0-based shown 1-based (more
    than 20 become depth bins, see ``bins``), ``tokens`` as 1K/128K, ``depth`` as a percentage."""
    y_axis: str = "value"
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
        if self.kind not in ("line", "heatmap", "scores"):
            raise ValueError(f"figure kind: expected line, heatmap or scores, got {self.kind!r}")
        if self.kind != "scores" and not self.x:
            raise ValueError(f"{self.kind} figure {self.name!r}: set x (the breakdown to plot)")
        if self.kind == "heatmap" and not self.y:
            raise ValueError(f"heatmap figure {self.name!r}: set y (its rows)")
        for axis in (self.x_axis, self.y_axis):
            if axis not in AXES:
                raise ValueError(f"figure {self.name!r}: axis {axis!r}; expected one of {AXES}")

    @classmethod
    def from_json(cls, value: Any) -> Figure:
        """A figure from metrics.json; ValueError naming what is wrong."""
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        if not all(isinstance(v, str) for v in value.values()):
            raise ValueError("every field must be a string")
        try:
            return cls(**value)
        except TypeError as exc:  # a required field missing
            raise ValueError(str(exc).partition("() ")[2] or str(exc)) from None

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


ROLES = ("system", "user", "assistant")


def _turns_error(where: str, detail: str) -> Exception:
    from needlework.errors import DataError

    return DataError(f"{where}: field 'messages' should be chat turns: {detail}")


def validate_turns(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    """Chat turns as every stage takes them (a non-empty list of role/content objects, roles
    from :data:`ROLES`), only role/content kept; else a one-line DataError naming ``where`` and
    the turn. What a model is asked (inference) is checked by this alone."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise _turns_error(where, "a non-empty list of {role, content}")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _turns_error(
                where, f"messages[{i}] should be an object, got {type(msg).__name__}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise _turns_error(
                where, f"messages[{i}].role should be one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise _turns_error(
                where, f"messages[{i}].content should be a string, got {type(content).__name__}"
            )
        out.append({"role": role, "content": content})
    return tuple(out)


def validate_messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    """A training conversation (optional system turn, then user/assistant alternating, ending
    with a non-empty assistant answer) with only role/content kept; else a one-line DataError
    naming ``where`` and the turn. Training data and the KV eval files are checked alike."""

    def bad(detail: str) -> Exception:
        return _turns_error(where, detail)

    out = list(validate_turns(messages, where))
    turns = out[1:] if out[0]["role"] == "system" else out
    for i, msg in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected:
            index = i + len(out) - len(turns)
            raise bad(
                f"messages[{index}].role is {msg['role']!r} but "
                f"{expected!r} was expected (optional system first, then user/"
                f"assistant alternating)"
            )
    if not turns or turns[-1]["role"] != "assistant":
        raise bad("the conversation must end with an assistant turn (the answer to train on)")
    if not turns[-1]["content"].strip():
        raise bad("the final assistant turn is empty (nothing to train on)")
    return tuple(out)


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
