"""Multi-scale Positional Encoding (Ms-PoE): Zhang et al., "Found in the Middle: How Language
Models Use Long Contexts Better via Plug-and-Play Positional Encoding", NeurIPS 2024
(arXiv:2403.04797), §3; the authors' code (github.com/VITA-Group/Ms-PoE,
``utils/modify_arch/llama.py``, ``src/ms_poe.sh``).

Run:  needlework eval --model hf:smollm2-135m-instruct --benchmark mdqa --limit 5 \\
          model.position_fix.name=ms_poe

In every changed layer, head h sees rotary positions divided by its own ratio ``r_h`` (queries and
keys, so its distances shrink by ``r_h``): the head ranked k-th of H by position-awareness gets
``r = ratio_min + (ratio_max - ratio_min) * k / H``, so the most position-aware heads keep ratios
closest to 1 ("larger ratios to less position-aware heads"). Position-awareness, as in the
authors' code: the share of keys to which the last prompt token's attention, computed without
rotary positions, exceeds 3x its mean; ranked per prompt at its prefill, kept for its generated
tokens (run.json records each layer's order by the score averaged over prompts).

Defaults from the authors' scripts: ratios 1.2 to 1.8, every layer but the first two (2-31 of 32,
scaled to the model's depth). ``ratio_min = ratio_max = 1`` is the plain model (byte-identical:
every head then stays on the model's own attention kernel).

How: the attention function receives the model's query and keys rotated at position p; rotating
them on by ``p / r_h - p`` (RoPE angles add) puts them at ``p / r_h``, with the model's own
``apply_rotary_pos_emb`` and ``inv_freq``. With grouped-query attention each query head gets its
own copy of the keys rotated with its ratio (the authors' code rotates a group's key with the
ratio of the group's first head). Where code and paper differ, the paper's text is followed:
rank k gets ratio k (the code indexes the ratios by the argsort itself, its inverse).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import Field

from needlework.config import config
from needlework.errors import UserError
from needlework.models.position_fixes.common import (
    Layers,
    decoder_layers,
    label,
    last_row_probs,
    layer_range,
    route_attention,
)


@config
class MsPoE:
    """Multi-scale positional encoding (Zhang et al., 2024)."""

    name: Literal["ms_poe"] = "ms_poe"
    ratio_min: Annotated[float, Field(ge=1)] = 1.2
    """Smallest position ratio, given to the most position-aware head (1 = its own positions)."""
    ratio_max: float = 1.8
    """Upper end of the ratios (exclusive, as in the authors' code: k / heads, k < heads)."""
    layers: Layers | None = None
    """First and last changed layer, 0-based; None = all but the first two (2-31 of 32), scaled."""

    def __post_init__(self) -> None:
        if self.ratio_min > self.ratio_max:
            raise ValueError(
                f"ratio_min: expected <= ratio_max ({self.ratio_max}), got {self.ratio_min}"
            )

    def label(self) -> str:
        layers = "-".join(map(str, self.layers)) if self.layers else None
        return label("mspoe", r=f"{self.ratio_min:g}-{self.ratio_max:g}", L=layers)

    def start(self, model: Any, tok: Any) -> MsPoERotary:
        return MsPoERotary(self, model)


class MsPoERotary:
    """Ms-PoE on a loaded model; ``prompt()`` around each generation re-ranks the heads."""

    def __init__(self, cfg: MsPoE, model: Any):
        self.cfg = cfg
        self.layers = layer_range(cfg.layers, (2, 31), model, "ms_poe")
        attn = decoder_layers(model)[0].self_attn
        rope = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
        self.inv_freq = getattr(getattr(model.get_decoder(), "rotary_emb", None), "inv_freq", None)
        if rope is None or self.inv_freq is None:
            raise UserError("ms_poe: needs a rotary-position (RoPE) model")
        self.rope: Any = rope
        self.ratios: dict[int, Any] = {}  # layer -> ratio per head, for the current prompt
        self.scores: dict[int, Any] = {}  # layer -> position-awareness per head, summed
        self.prompts = 0
        route_attention(model, self.attend)

    @contextmanager
    def prompt(self, ids: list[int], text: str) -> Iterator[None]:
        self.ratios, self.prompts = {}, self.prompts + 1
        yield

    def rotate(self, x: Any, pos: Any, turn: Any) -> Any:
        """``x`` (rotary at ``pos``) moved on to ``pos * (1 + turn[h])`` for each head h."""
        import torch

        angle = (pos[None, :] * turn[:, None])[..., None] * self.inv_freq  # [heads, len, dim/2]
        emb = torch.cat((angle, angle), -1)
        return self.rope(x, x, emb.cos().to(x.dtype), emb.sin().to(x.dtype), unsqueeze_dim=0)[0]

    def rank(self, layer: int, query: Any, key: Any, mask: Any, pos: Any, scaling: float) -> Any:
        """Each head's ratio: by its position-awareness on this prompt (module docstring)."""
        import torch

        back = torch.full((query.shape[1],), -1.0, device=pos.device)  # back to position 0
        q = self.rotate(query[:, :, -1:], pos[-1:], back)
        p = last_row_probs(q, self.rotate(key, pos, back[: key.shape[1]]), mask, scaling)
        score = (p > 3 * p.mean(-1, keepdim=True)).float().mean(-1)
        self.scores[layer] = self.scores.get(layer, 0) + score
        heads = len(score)
        ratios = torch.empty(heads, device=pos.device)
        spread = self.cfg.ratio_max - self.cfg.ratio_min
        ratios[torch.argsort(-score, stable=True)] = (
            self.cfg.ratio_min + spread * torch.arange(heads, device=pos.device) / heads
        )
        return ratios

    def attend(self, module: Any, original: Any, query: Any, key: Any, value: Any, mask: Any,
               **kwargs: Any) -> Any:  # fmt: skip
        layer = module.layer_idx
        if layer not in self.layers:
            return original(module, query, key, value, mask, **kwargs)
        import torch

        heads, n_q, n_k = query.shape[1], query.shape[2], key.shape[2]
        pos = torch.arange(n_k, dtype=torch.float32, device=query.device)  # one prompt at a time
        if layer not in self.ratios:  # the prompt's prefill
            self.ratios[layer] = self.rank(layer, query, key, mask, pos, kwargs["scaling"])
        turn = 1 / self.ratios[layer] - 1
        if not bool(turn.any()):
            return original(module, query, key, value, mask, **kwargs)
        group = heads // key.shape[1]
        out = torch.nn.functional.scaled_dot_product_attention(
            self.rotate(query, pos[n_k - n_q :], turn),
            self.rotate(key.repeat_interleave(group, 1), pos, turn),
            value.repeat_interleave(group, 1),
            attn_mask=mask,
            is_causal=mask is None and n_q > 1,
            scale=kwargs["scaling"],
        )
        return out.transpose(1, 2).contiguous(), None

    def record(self) -> dict[str, Any]:
        return {
            "layers": [self.layers[0], self.layers[-1]],
            "prompts": self.prompts,
            "head_order": {  # most to least position-aware, by the mean score over prompts
                str(layer): [int(h) for h in (-s).argsort(stable=True).tolist()]
                for layer, s in sorted(self.scores.items())
            },
        }
