"""General capabilities through lm-evaluation-harness: MMLU, HellaSwag, GSM8K, TriviaQA, NQ-Open
("From Artificial Needles to Real Haystacks", Xiong et al., ICLR 2025, §4.3, Tables 1-2).

Run:  needlework eval --config configs/eval/general.yaml model.path=<model dir>

Nothing is re-implemented: lm-eval builds the prompts, runs the model and scores every sample;
this unit picks the tasks (lm-eval's built-in hub tasks, or the ``needlework_*`` copies in
``evaluation/lm_eval_tasks`` that read local files), turns lm-eval's per-sample log into
``predictions.jsonl`` and writes ``metrics.json`` with 95% CIs from the per-sample scores. Shot
counts and metrics, and why: docs/general.md.

Backends: ``hf`` runs through lm-eval's HFLM (log-likelihood tasks work), ``vllm`` through
lm-eval's vLLM model, anything else (``openai``, ``scripted``) through
:mod:`needlework.evaluation.lm_eval_adapter`, which can only generate; MMLU and HellaSwag then use
letter-answer variants (``generative``).
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from needlework.config import Distinct, NonNegativeInt, PositiveInt, config
from needlework.errors import UserError
from needlework.evaluation.base import Benchmark
from needlework.records import Figure
from needlework.registry import benchmarks


@config
class TaskSpec:
    """How one general benchmark maps onto lm-eval (a fact table, not config)."""

    hub_task: str
    """lm-eval's built-in task or group (reads the Hugging Face hub)."""
    local_task: str
    """The ``needlework_*`` copy reading ``data_dir`` (same prompt and metric)."""
    shots: NonNegativeInt
    """Default few-shot count (spec §4.3)."""
    primary: str
    """lm-eval metric key (``metric`` or ``metric,filter``) reported as the task's score."""
    gen_task: str | None = None
    """Letter-answer variant for endpoints without log-probabilities (None: already generative)."""
    local_caveat: str | None = None
    """Why local-data scores are not directly comparable with the paper (None: they are)."""
    closed_book: bool = False
    """A short-answer knowledge task: wrong answers and abstentions are scored too."""


GEN_PRIMARY = "exact_match,letter"
TaskName = Literal["mmlu", "hellaswag", "gsm8k", "triviaqa", "nq_open"]
TASKS: dict[TaskName, TaskSpec] = {
    "mmlu": TaskSpec("mmlu", "needlework_mmlu", 0, "acc", gen_task="needlework_mmlu_gen"),
    "hellaswag": TaskSpec(
        "hellaswag",
        "needlework_hellaswag",
        0,
        "acc",
        gen_task="needlework_hellaswag_gen",
        local_caveat="llama.cpp's text copy of the validation set (WikiHow markup removed, "
        "ctx_a/ctx_b merged, spaces collapsed), not the original JSONL",
    ),
    "gsm8k": TaskSpec(
        "gsm8k",
        "needlework_gsm8k",
        5,
        "exact_match,strict-match",
        local_caveat="no local train split: the 5 examples come from the test split (never the "
        "question asked); the hub task draws them from train",
    ),
    "triviaqa": TaskSpec(
        "triviaqa",
        "needlework_triviaqa",
        0,
        "exact_match,remove_whitespace",
        local_caveat="llm-foundry's 3,000-question subset with answers clipped to 10 tokens, not "
        "the 17,944-question rc.nocontext validation set",
        closed_book=True,
    ),
    "nq_open": TaskSpec(
        "nq_open", "needlework_nq_open", 0, "exact_match,remove_whitespace", closed_book=True
    ),
}


@benchmarks.register("general")
@config
class General(Benchmark):
    """MMLU, HellaSwag, GSM8K, TriviaQA and NQ-Open, run and scored by lm-evaluation-harness."""

    tasks: Annotated[tuple[TaskName, ...], Field(min_length=1), Distinct] = (
        "mmlu",
        "hellaswag",
        "gsm8k",
        "triviaqa",
        "nq_open",
    )
    """Which of mmlu, hellaswag, gsm8k, triviaqa, nq_open to run, in this order."""
    data_dir: Annotated[str | None, Field(validate_default=True)] = None
    """Folder in the ../shared/data layout (offline, local copies); None = ``$NEEDLEWORK_DATA``
    when it is set, else lm-eval's hub tasks."""
    num_fewshot: dict[str, NonNegativeInt] = field(default_factory=dict)
    """Per-task shot overrides, e.g. {mmlu: 5}; defaults: gsm8k 5, the rest 0 (docs/general.md)."""
    generative: bool | None = None
    """Letter-answer MMLU/HellaSwag; None = only when the backend has no log-probabilities."""
    apply_chat_template: bool = False
    """Wrap prompts in the model's chat template (few-shot examples as turns). lm-eval's default,
    and the paper's likely setting, is off; chat endpoints always receive messages."""
    batch_size: PositiveInt | None = None
    """Requests per model call; None = the backend's own batch_size (or 64 for chat endpoints)."""
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Evaluate the first fraction (0-1) of each (sub)task, e.g. 0.2 for the paper's GPT-3.5
    MMLU subset; the runner's ``limit`` (a count per subtask) wins when both are set."""
    max_gen_toks: PositiveInt | None = None
    """Cap on generated tokens for every generative task (smoke runs, tests); None keeps each
    task's own limit (lm-eval's 256 unless the task sets one). Changes scores: recorded."""
    request_cache: bool = True
    """Keep every model answer in <run>/lm_eval/ so an interrupted run resumes mid-task."""
    held_out: tuple[str, ...] = ()
    """Finetuning datasets (folders or manifest.json) whose recorded questions TriviaQA and
    NQ-Open drop (local data only: the hub tasks cannot be filtered)."""

    group_by = ("subject",)
    max_new_tokens = 256  # lm-eval's task configs set the real generation limits
    report_rank = 50

    @field_validator("data_dir")
    @classmethod
    def _from_environment(cls, value: str | None) -> str | None:
        from needlework.runtime import settings

        data = settings().NEEDLEWORK_DATA
        return str(data) if value is None and data is not None else value

    def __post_init__(self) -> None:
        extra = set(self.num_fewshot) - set(self.tasks)
        if extra:
            raise ValueError(f"num_fewshot: {sorted(extra)} not among tasks {list(self.tasks)}")

    @property
    def primary_metric(self) -> str:
        """The first task's score as named in metrics.json (run_suite resolves ``generative``)."""
        key = self.tasks[0]
        if self.generative and TASKS[key].gen_task:
            return f"{key}_gen/{GEN_PRIMARY}"
        return f"{key}/{TASKS[key].primary}"

    def figures(self) -> tuple[Figure, ...]:
        return (
            Figure(
                "scores",
                heading="General benchmarks (lm-evaluation-harness)",
                name="scores",
                shared="general",
            ),
        )

    def label(self) -> str:
        """``general`` (+ ``_gen`` for letter-answer variants, + the tasks when not all five),
        so two suites in one eval config land in different run folders."""
        name = "general_gen" if self.generative else "general"
        return name if self.tasks == tuple(TASKS) else f"{name}_{'_'.join(self.tasks)}"

    def plan(self, backend: str) -> list[dict[str, Any]]:
        """Per task: result key, lm-eval task name, shots, primary metric, data caveat."""
        from needlework.registry import backends

        logprobs = bool(getattr(dict(backends.items()).get(backend), "log_likelihoods", False))
        gen = (not logprobs) if self.generative is None else self.generative
        if gen is False and not logprobs:
            raise UserError(
                f"general.generative: false needs log-probabilities, which the "
                f"'{backend}' backend cannot return; set generative: true or leave "
                "it unset"
            )
        out = []
        for key in self.tasks:
            spec = TASKS[key]
            variant = gen and spec.gen_task is not None
            out.append(
                {
                    "key": f"{key}_gen" if variant else key,
                    "task": spec.gen_task
                    if variant
                    else (spec.local_task if self.data_dir else spec.hub_task),
                    "shots": self.num_fewshot.get(key, spec.shots),
                    "primary": GEN_PRIMARY if variant else spec.primary,
                    "source": "local" if self.data_dir else "hub",
                    "caveat": spec.local_caveat if self.data_dir else None,
                    "generative_variant": variant,
                    "closed_book": spec.closed_book,
                }
            )
        return out

    def preflight(self, model: Any) -> None:
        """What a run needs, checked before its folder is made: a plan the backend can run, and
        the local files (or the hub) the tasks read."""
        from needlework.evaluation.lm_eval_run import data_root

        self.plan(type(model).registry_name)
        data_root(self)

    def run_suite(self, model: Any, run_dir: str | Path, limit: int | None) -> dict[str, Any]:
        """Run every task through lm-eval, write predictions.jsonl and metrics.json (returned)."""
        from needlework.evaluation.lm_eval_run import run_general

        return run_general(self, model, Path(run_dir), limit)
