"""Chat templates at training time: how the answer-only loss mask is built, and sequence lengths.

Two routes lead to "loss on the answer tokens only" in TRL 1.16, and the template decides which:

* ``assistant_mask`` — rows keep their ``messages``; TRL sets ``assistant_only_loss=True`` and
  masks everything outside the template's ``{% generation %}...{% endgeneration %}`` markers.
  Needs a template with those markers (our tiny ChatML template; TRL ships patched copies only for
  a few hub templates). Every assistant turn of a multi-turn row is trained.
* ``prompt_completion`` — each row becomes ``prompt`` = every turn before the final answer and
  ``completion`` = the final assistant turn; TRL renders the prompt alone with
  ``add_generation_prompt=True`` and the whole conversation, and trains only the tokens after their
  common prefix.

For templates without generation markers — Mistral-7B-Instruct's ``[INST]`` template, the paper's
model — ``auto`` picks ``prompt_completion``, and that is the correct choice rather than shipping
a hand-edited Mistral template with markers added:

1. The prompt is rendered by the checkpoint's *own, unmodified* template exactly as an evaluator
   renders it (``apply_chat_template(user turns, add_generation_prompt=True)``), so the tokens the
   model is trained to continue from are the tokens it is given at inference, by construction.
   A hand-written copy must match byte for byte one of the template revisions Mistral has published
   on the hub (the spacing around ``[INST]``/``[/INST]`` and before the answer changed between them,
   and with SentencePiece that changes the tokens: ``]The`` vs ``] The``); any drift silently trains
   a prompt format the evaluator never produces.
2. The label boundary is computed on *tokens* (the common prefix of the two tokenizations), not
   mapped from character offsets, so a SentencePiece piece spanning the boundary cannot leak
   prompt text into the loss or drop the first answer token.
3. The completion is rendered by the template too, so it ends with what the template appends
   after an answer (``</s>`` for Mistral): the model is trained to stop.

The cost: only the final assistant turn of a multi-turn row is trained. Our synthetic rows have
one turn; for multi-turn mix-in data, choose ``chat_format: assistant_mask`` with a template
that has markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from needlework.errors import ConfigError, DataError
from needlework.training.data import ChatRow

ASSISTANT_MASK = "assistant_mask"
PROMPT_COMPLETION = "prompt_completion"
ChatFormat = Literal["auto", "assistant_mask", "prompt_completion"]

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def template_text(tokenizer: Any) -> str | None:
    """The tokenizer's chat template (the ``default`` one when several are named)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template


def has_generation_markers(template: str | None) -> bool:
    """True when the template marks assistant text with ``{% generation %}`` blocks."""
    # cast: bool(template) has already ruled out None
    return bool(template) and _GENERATION.search(cast(str, template)) is not None


def set_chat_template(tokenizer: Any, path: str | Path | None, *, field: str) -> None:
    """Replace the tokenizer's template with a ``.jinja`` file; require that one exists at all."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"file not found: {p} (expected a Jinja chat template)", field=field)
        tokenizer.chat_template = p.read_text(encoding="utf-8")
    if not template_text(tokenizer):
        raise ConfigError(
            "the tokenizer has no chat template; set it to a .jinja file", field=field
        )
    check_template_compiles(tokenizer, path, field=field)


def check_template_compiles(tokenizer: Any, path: str | Path | None, *, field: str) -> None:
    """Render one user/assistant exchange, so a Jinja syntax error is a one-line ConfigError
    naming the file and line now rather than a traceback once rows are measured.

    Errors the template raises on purpose (``raise_exception`` for a role order it refuses)
    are left to the real rows: they may not apply to them."""
    import jinja2

    sample = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    try:
        tokenizer.apply_chat_template(sample, tokenize=False)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{path}" if path is not None else "the tokenizer's chat template"
        raise ConfigError(
            f"{where}: line {exc.lineno}: Jinja syntax error ({exc.message})", field=field
        ) from None
    except Exception:  # a deliberate refusal of the sample, not a syntax error
        return


def resolve_format(tokenizer: Any, requested: str, *, field: str) -> str:
    """``auto``: assistant_mask if the template has generation markers, else prompt_completion."""
    markers = has_generation_markers(template_text(tokenizer))
    if requested == "auto":
        return ASSISTANT_MASK if markers else PROMPT_COMPLETION
    if requested == ASSISTANT_MASK and not markers:
        raise ConfigError(
            "assistant_mask needs a chat template with {% generation %} markers; "
            "use prompt_completion (or auto) for this model",
            field=field,
        )
    return requested


def encode(tokenizer: Any, messages: list[Any], **kwargs: Any) -> dict[str, list[int]]:
    """``apply_chat_template`` tokenized as TRL does it (transformers 5 returns a dict)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return {k: list(v) for k, v in out.items()}


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class SeqInfo:
    """Token counts of one training row under the chosen format."""

    length: int
    """Tokens of the whole rendered conversation (what TRL truncates at ``max_length``)."""
    trained: int
    """Tokens that carry loss (answer plus end-of-turn)."""
    prompt_is_prefix: bool = True
    """False when the prompt alone tokenizes differently from the start of the whole row."""


def measure(tokenizer: Any, row: ChatRow, fmt: str) -> SeqInfo:
    """Tokenize ``row`` the way TRL will and count total and trained tokens."""
    if fmt == ASSISTANT_MASK:
        out = encode(tokenizer, [*row.messages], return_assistant_tokens_mask=True)
        trained = sum(out["assistant_masks"])
        info = SeqInfo(len(out["input_ids"]), trained)
    else:
        prompt = encode(tokenizer, row.prompt, add_generation_prompt=True)["input_ids"]
        full = encode(tokenizer, [*row.messages])["input_ids"]
        start = common_prefix_length(prompt, full)
        info = SeqInfo(len(full), len(full) - start, start == len(prompt))
    if info.trained == 0:
        raise DataError(
            f"{row.source}: the chat template leaves no answer tokens to train on "
            f"({fmt}); check the template"
        )
    return info


def measure_all(
    tokenizer: Any, rows: list[ChatRow], fmt: str, *, progress: bool = True
) -> list[SeqInfo]:
    """:func:`measure` over every row, with a progress bar for large sets."""
    from tqdm.auto import tqdm

    it = tqdm(
        rows, desc="Measuring token lengths", unit="row", disable=not progress, mininterval=2.0
    )
    return [measure(tokenizer, row, fmt) for row in it]


def check_lengths(
    rows: list[ChatRow],
    infos: list[SeqInfo],
    max_length: int | None,
    *,
    model_limit: int | None,
    field: str,
) -> int:
    """The max_length to train with; DataError naming the row if any would be truncated.

    TRL truncates longer rows (``keep_start`` cuts the answer of a long prompt off) and then
    silently drops rows left without answer tokens, so we refuse them up front instead.
    """
    longest = max(range(len(rows)), key=lambda i: infos[i].length)
    need = infos[longest].length
    if max_length is not None:
        too_long = [i for i, info in enumerate(infos) if info.length > max_length]
        if too_long:
            i = too_long[0]
            raise DataError(
                f"{rows[i].source}: example has {infos[i].length} tokens with the chat "
                f"template, more than {field}={max_length} ({len(too_long)} of {len(rows)} "
                f"rows too long, longest {need}); increase {field} or leave it unset (auto)"
            )
        need = max_length
    if model_limit is not None and infos[longest].length > model_limit:
        raise DataError(
            f"{rows[longest].source}: example has {infos[longest].length} tokens, "
            f"more than the model's max_position_embeddings={model_limit}"
        )
    return need


def length_stats(infos: list[SeqInfo]) -> dict[str, Any]:
    """Summary recorded in run.json (so a report can show what was trained on)."""
    lengths = sorted(i.length for i in infos)
    return {
        "rows": len(infos),
        "min_tokens": lengths[0],
        "max_tokens": lengths[-1],
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "total_tokens": sum(lengths),
        "trained_tokens": sum(i.trained for i in infos),
        "prompt_not_prefix_rows": sum(not i.prompt_is_prefix for i in infos),
    }
