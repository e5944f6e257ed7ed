"""Any needlework :class:`~needlework.models.base.ChatModel` as an lm-evaluation-harness ``LM``.

Only ``generate_until`` exists: a chat endpoint (OpenAI-compatible server, the ``scripted`` fake)
returns text, not log-probabilities, so log-likelihood tasks (MMLU, HellaSwag as lm-eval runs
them) fail with a one-line error pointing at the generative variants instead of a wrong number.

Why an adapter rather than lm-eval's own ``local-chat-completions``: it reuses the backend the rest
of needlework uses (same retries, concurrency, usage counters, the ``scripted`` fake for tests) and
needs no tokenizer download, which lm-eval's API models want for chat templating.

With ``apply_chat_template=True`` lm-eval hands over the chat turns (few-shot examples as
user/assistant turns, the task description as a system turn) and they reach the model as
messages; without it, the whole plain-text prompt is one user message.

This module imports lm_eval at the top: import it only where lm-eval is needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lm_eval.api.model import LM
from tqdm import tqdm

from needlework.errors import UserError
from needlework.records import Message

if TYPE_CHECKING:
    from needlework.models.base import ChatModel

GENERATIVE_HINT = (
    "use the generative variants (general benchmark: generative: true; lm-eval "
    "tasks needlework_mmlu_gen, needlework_hellaswag_gen)"
)


class ChatTurns(str):
    """A prompt that is JSON-encoded chat turns (what ``apply_chat_template`` hands back)."""


def to_messages(context: str) -> list[Message]:
    """lm-eval context -> chat messages: decoded turns, or the text as one user message."""
    if isinstance(context, ChatTurns):
        return [{"role": m["role"], "content": m["content"]} for m in json.loads(context)]
    return [{"role": "user", "content": str(context)}]


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the earliest stop string (lm-eval's ``until``), as HF generation does."""
    return text[: min((text.find(s) for s in until if s and s in text), default=len(text))]


class ChatModelLM(LM):
    """lm-eval ``LM`` over a needlework chat backend: generation only, greedy, order kept."""

    def __init__(self, model: ChatModel, *, batch_size: int = 64, progress: bool = True) -> None:
        super().__init__()
        self.model, self.batch_size, self.progress = model, batch_size, progress

    def describe(self) -> str:
        return self.model.describe()

    # -- what lm-eval calls ---------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        jobs: dict[int, list[int]] = {}  # max_gen_toks -> request indices
        stops: list[list[str]] = []
        for i, req in enumerate(requests):
            _, kwargs = req.args
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample"):
                raise UserError(
                    f"{self.describe()}: sampling was requested (do_sample) but "
                    "needlework chat backends decode greedily"
                )
            until = kwargs.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            jobs.setdefault(int(kwargs.get("max_gen_toks", 256)), []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(
            total=len(requests),
            desc=f"lm-eval generate ({self.describe()})",
            disable=disable_tqdm or not self.progress,
        )
        for max_new_tokens, indices in jobs.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                convs = [to_messages(requests[i].args[0]) for i in chunk]
                texts = self.model.generate(convs, max_new_tokens=max_new_tokens)
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = cut_at_stop(text, stops[i])
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                bar.update(len(chunk))
        bar.close()
        return [o if o is not None else "" for o in out]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise UserError(
            f"{self.describe()}: this lm-eval task scores log-probabilities "
            f"({len(requests)} loglikelihood requests), which a chat endpoint "
            f"cannot return; {GENERATIVE_HINT}"
        )

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise UserError(
            f"{self.describe()}: perplexity tasks need log-probabilities, which a "
            "chat endpoint cannot return"
        )

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        if not add_generation_prompt:
            raise UserError(
                f"{self.describe()}: the task pre-fills the assistant turn "
                "(gen_prefix), which a chat endpoint cannot continue"
            )
        return ChatTurns(json.dumps(chat_history, ensure_ascii=False))

    @property
    def tokenizer_name(self) -> str:
        return f"needlework-chat:{self.describe()}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""
