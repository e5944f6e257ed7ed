"""Attention calibration, "found-in-the-middle": Hsieh et al., "Found in the Middle: Calibrating
Positional Attention Bias Improves Long Context Utilization", Findings of ACL 2024
(arXiv:2406.16008), §3.2 (Eq. 2-4), §4.1 (Eq. 5-6), Appendix B.

Run:  needlework eval --model hf:smollm2-135m-instruct --benchmark mdqa --limit 5 \\
          model.position_fix.name=attn_calibration

For the query of each token the model generates from (the last prompt token, then each new one),
in every calibrated layer and head, with ``p`` its attention probabilities over the keys:

* ``Attn(k)``: the mean of ``p`` over the tokens of document k (§2.1);
* ``bias(k)``: the same on the prompt whose every document is the content-free ``dummy`` (Eq. 3);
* ``alpha = softmax((Attn - bias) / temperature)`` over the documents (Eq. 4 and 5);
* ``p'(i) = p(i) * alpha_k / Attn(k) * C`` on each token i of document k, C keeping the documents'
  total attention (Eq. 5); the other tokens keep theirs; ``p + strength * (p' - p)`` is used.

Documents are the matches of ``document_regex`` in the prompt as the chat template renders it; a
token belongs to every document its characters overlap. The dummy prompt is that text with each
document replaced; its bias costs one extra forward pass, cached by its token ids (for MDQA one
pass per question: the dummy prompt is the same at every gold position).

Chosen here where the paper is silent: the dummy's text; ``alpha`` per layer and head (the paper's
analysis averages both); all documents replaced in one pass (the paper's O(K) passes, §6, place
the dummy at one position each); the last prompt token's bias reused for every generated token;
``strength`` (not in the paper: 1 = the paper, 0 = the plain model).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from needlework.config import Fraction, config
from needlework.errors import UserError
from needlework.models.position_fixes.common import (
    Layers,
    label,
    last_row_probs,
    layer_range,
    route_attention,
)


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"expected a regular expression: {exc}") from None
    return text


def _template(text: str) -> str:
    try:
        text.format(i=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"expected a text whose only placeholder is {{i}}: {exc!r}") from None
    return text


@config
class AttnCalibration:
    """Found-in-the-middle attention calibration (Hsieh et al., 2024)."""

    name: Literal["attn_calibration"] = "attn_calibration"
    temperature: Annotated[float, Field(gt=0)] = 5e-5
    """``t`` of ``alpha = softmax(calibrated attention / t)`` (the paper's value, App. B)."""
    strength: Fraction = 1.0
    """Share of the calibrated attention: 1 = the paper, 0 = the plain model (byte-identical)."""
    layers: Layers | None = None
    """First and last calibrated layer, 0-based; None = the second half (the paper: the last 16
    of 32 layers, all heads; earlier layers made generation unstable)."""
    document_regex: Annotated[str, AfterValidator(_regex)] = r"(?m)^Document \[\d+\].*$"
    """A document in the rendered prompt (default: MDQA's ``Document [i](Title: t) text`` lines);
    prompts without one are generated uncalibrated (counted in run.json)."""
    dummy: Annotated[str, AfterValidator(_template)] = "Document [{i}](Title: N/A) N/A"
    """The content-free document put in place of each to measure the bias (``{i}``: 1-based)."""

    def label(self) -> str:
        layers = "-".join(map(str, self.layers)) if self.layers else None
        return label("calib", t=self.temperature, s=self.strength, L=layers)

    def start(self, model: Any, tok: Any) -> Calibrator:
        return Calibrator(self, model, tok)


class Calibrator:
    """The calibration on a loaded model; ``prompt(ids, text)`` wraps each generation."""

    def __init__(self, cfg: AttnCalibration, model: Any, tok: Any):
        self.cfg, self.model, self.tok = cfg, model, tok
        self.layers = layer_range(cfg.layers, (16, 31), model, "attn_calibration")
        self.spans: list[list[int]] = []  # token indices of each document of the current pass
        self.bias: dict[int, Any] | None = None  # layer -> [heads, documents]; None: measuring
        self.measured: dict[int, Any] = {}
        self.cache: dict[tuple[int, ...], dict[int, Any]] = {}
        self.active = False
        self.counts = {"prompts": 0, "without_documents": 0, "dummy_passes": 0}
        self.bias_sum: dict[int, list[Any]] = {}  # documents -> [dummy prompts, summed bias]
        route_attention(model, self.attend)

    @contextmanager
    def prompt(self, ids: list[int], text: str) -> Iterator[None]:
        self.counts["prompts"] += 1
        ranges = [m.span() for m in re.finditer(self.cfg.document_regex, text)]
        if not ranges:
            self.counts["without_documents"] += 1
            yield
            return
        self.bias = self.measure_bias(text, ranges)
        self.spans = self.token_spans(text, ranges, ids)[1]
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def token_spans(self, text: str, ranges: list[tuple[int, int]], ids: Any = None) -> Any:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if ids is not None and list(enc.input_ids) != list(ids):
            raise UserError(
                "attn_calibration: the rendered prompt does not tokenize to the prompt's own "
                "tokens, so its documents cannot be located"
            )
        spans = [[i for i, (s, e) in enumerate(enc.offset_mapping) if s < b and e > a]
                 for a, b in ranges]  # fmt: skip
        if not all(spans):
            raise UserError("attn_calibration: a document_regex match holds no token")
        return enc.input_ids, spans

    def measure_bias(self, text: str, ranges: list[tuple[int, int]]) -> dict[int, Any]:
        """``Attn`` on the prompt with every document replaced by the dummy (Eq. 3), cached."""
        import torch

        parts, dummies, end = [], [], 0
        for k, (a, b) in enumerate(ranges):
            parts.append(text[end:a])
            at = sum(map(len, parts))
            parts.append(self.cfg.dummy.format(i=k + 1))
            dummies.append((at, at + len(parts[-1])))
            end = b
        ids, self.spans = self.token_spans("".join(parts) + text[end:], dummies)
        key = tuple(ids)
        if key not in self.cache:
            self.bias, self.active, self.measured = None, True, {}
            try:
                with torch.inference_mode():
                    self.model(input_ids=torch.tensor([ids], device=self.model.device),
                               logits_to_keep=1)  # fmt: skip
            finally:
                self.active = False
            self.cache = {} if len(self.cache) > 4096 else self.cache  # bounded memory
            self.cache[key] = self.measured
            self.counts["dummy_passes"] += 1
            mean = torch.stack(list(self.measured.values())).mean((0, 1))
            seen = self.bias_sum.setdefault(len(ranges), [0, 0])
            seen[0], seen[1] = seen[0] + 1, seen[1] + mean
        return self.cache[key]

    def attend(self, module: Any, original: Any, query: Any, key: Any, value: Any, mask: Any,
               **kwargs: Any) -> Any:  # fmt: skip
        out, weights = original(module, query, key, value, mask, **kwargs)
        layer = module.layer_idx
        applying = self.bias is not None
        if not self.active or layer not in self.layers or (applying and self.cfg.strength == 0):
            return out, weights
        import torch

        p = last_row_probs(query, key, mask, kwargs["scaling"])  # [heads, keys]
        attn = torch.stack([p[:, s].mean(-1) for s in self.spans], -1)  # [heads, documents]
        if self.bias is None:
            self.measured[layer] = attn
            return out, weights
        alpha = ((attn - self.bias[layer]) / self.cfg.temperature).softmax(-1)
        sizes = torch.tensor([len(s) for s in self.spans], dtype=p.dtype, device=p.device)
        scale = alpha * ((attn @ sizes) / (alpha @ sizes))[:, None] / attn.clamp_min(1e-30)
        new = p.clone()
        for k, s in enumerate(self.spans):
            new[:, s] = p[:, s] * scale[:, k : k + 1]
        new = p + self.cfg.strength * (new - p)
        rows = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)[0].float()
        out = out.clone()  # [batch, queries, heads, dim]: replace the last query's row
        out[0, -1] = (new[:, None, :] @ rows)[:, 0].to(out.dtype)
        return out, weights

    def record(self) -> dict[str, Any]:
        """For run.json: the layers, prompt counts, and the mean bias (attention per token) of
        each document position, averaged over layers, heads and dummy prompts."""
        return {
            "layers": [self.layers[0], self.layers[-1]],
            **self.counts,
            "mean_bias_by_position": {
                str(k): [float(f"{x:.4g}") for x in (total / n).tolist()]
                for k, (n, total) in sorted(self.bias_sum.items())
            },
        }
