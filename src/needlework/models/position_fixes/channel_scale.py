"""Positional-channel scaling: Yu et al., "Mitigate Position Bias in Large Language Models via
Scaling a Single Dimension" (Findings of ACL 2025 as "... via Scaling a Single Hidden States
Channel", arXiv:2406.02536), §2.3 (Definition 2.1), §3; the authors' code
(github.com/PositionalHidden/PositionalHidden, ``modeling_llama_hidden_scale.py``).

Run:  needlework eval --model hf:smollm2-135m-instruct --benchmark mdqa --limit 5 \\
          model.position_fix.name=channel_scale

In each changed layer, channel ``channel`` of the attention input is multiplied by ``factor``
wherever the *last token's* attention is computed: the last prompt token attends with a scaled
query over scaled keys (values unscaled; every other prompt token keeps the plain attention),
and the changed layers cache the scaled keys, so each generated token (the last token of its
step) attends the same way, as in the authors' code.

``channel``, unless given: the one whose value, averaged over 8 unrelated prompts (random
lowercase words, 512 tokens, seed 0), correlates most with absolute position (mean |Pearson r|
over the changed layers' inputs, the first 30 positions dropped as in the paper); recorded in
run.json. The paper's search (Algorithm 1) instead counts layers where a cubic fit is monotonic,
ranks by smoothness over 2000 random strings, and picks among its top 10 by the loss on 100
KV-retrieval samples: only the first idea is kept here.

Defaults: ``factor`` 0 (the paper's usual choice, Table 4; its grid is {0.5, 0, -0.5, -1}) and
layers 10-25 of 32, scaled to the model's depth. ``factor: 1`` is the plain model (byte-identical).

Public APIs only: forward pre-hooks on ``q_proj``/``k_proj`` scale the channel while a flag is on;
on the prefill, a forward hook on the attention module crops this call's keys from the layer's
cache and runs the module's own ``forward`` again with the flag on, keeping the last row of its
output and the scaled keys it cached.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Literal

from needlework.config import NonNegativeInt, config
from needlework.errors import UserError
from needlework.models.position_fixes.common import (
    Layers,
    decoder_layers,
    label,
    layer_range,
)

PROBE_PROMPTS, PROBE_TOKENS, PROBE_SEED, SKIP = 8, 512, 0, 30


@config
class ChannelScale:
    """Scaling the positional hidden-state channel (Yu et al., 2025)."""

    name: Literal["channel_scale"] = "channel_scale"
    factor: float = 0.0
    """What the channel is multiplied by: 1 = the plain model (byte-identical), below 1 weakens
    the position bias, below 0 reverses it (the paper's grid: 0.5, 0, -0.5, -1)."""
    channel: NonNegativeInt | None = None
    """The hidden-state channel; None = searched (most correlated with position) at load time
    and recorded in run.json (set it to reuse a searched one)."""
    layers: Layers | None = None
    """First and last changed layer, 0-based; None = the paper's 10-25 of 32 layers, scaled."""

    def label(self) -> str:
        layers = "-".join(map(str, self.layers)) if self.layers else None
        return label("chscale", f=self.factor, c=self.channel, L=layers)

    def start(self, model: Any, tok: Any) -> ChannelScaler:
        return ChannelScaler(self, model, tok)


class ChannelScaler:
    """The scaling on a loaded model (hooks stay for the model's life)."""

    def __init__(self, cfg: ChannelScale, model: Any, tok: Any):
        self.cfg = cfg
        self.layers = layer_range(cfg.layers, (10, 25), model, "channel_scale")
        attns = [decoder_layers(model)[i].self_attn for i in self.layers]
        if not all(hasattr(a, "q_proj") and hasattr(a, "k_proj") for a in attns):
            raise UserError("channel_scale: needs attention with separate q_proj and k_proj")
        self.correlation: float | None = None
        if cfg.channel is None:
            self.channel, self.correlation = self.search(model, tok)
        elif cfg.channel >= model.config.hidden_size:
            raise UserError(
                f"channel_scale: channel: expected < {model.config.hidden_size} (the model's "
                f"hidden size), got {cfg.channel}"
            )
        else:
            self.channel = cfg.channel
        self.on = False  # while on, q_proj/k_proj see the scaled channel
        for attn in attns:
            attn.register_forward_pre_hook(self.before, with_kwargs=True)
            attn.register_forward_hook(self.after, with_kwargs=True)
            attn.q_proj.register_forward_pre_hook(self.scale)
            attn.k_proj.register_forward_pre_hook(self.scale)

    def search(self, model: Any, tok: Any) -> tuple[int, float]:
        """The channel most correlated with position on the probe prompts, and its mean |r|."""
        import torch

        rng = random.Random(PROBE_SEED)
        length = min(PROBE_TOKENS, model.config.max_position_embeddings)
        total: Any = 0
        for _ in range(PROBE_PROMPTS):
            words = ("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 8)))
                     for _ in range(length))  # fmt: skip
            ids = tok(" ".join(words), add_special_tokens=False).input_ids[:length]
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([ids], device=model.device),
                            output_hidden_states=True, logits_to_keep=1)  # fmt: skip
            # hidden_states[i] is the input of layer i
            total = total + torch.stack([out.hidden_states[i][0].float() for i in self.layers])
        x = (total / PROBE_PROMPTS)[:, SKIP:]  # [layers, positions, channels]
        x = x - x.mean(1, keepdim=True)
        pos = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)
        pos = pos - pos.mean()
        r = (x * pos[:, None]).sum(1) / (x.norm(dim=1) * pos.norm()).clamp_min(1e-12)
        score = r.abs().mean(0)
        best = int(score.argmax())
        return best, float(score[best])

    def prompt(self, ids: list[int], text: str) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def scale(self, module: Any, args: tuple[Any, ...]) -> Any:
        if not self.on:
            return None
        x = args[0].clone()
        x[..., self.channel] *= self.cfg.factor
        return (x, *args[1:])

    @staticmethod
    def _length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).shape[1]

    def before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.on = self._length(args, kwargs) == 1  # a generated token: the last token

    def after(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any):
        if self.on:
            self.on = False
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:  # drop this call's plain keys: the scaled ones replace them
            cache.layers[module.layer_idx].crop(-self._length(args, kwargs))
        self.on = True
        try:
            again = module.forward(*args, **kwargs)
        finally:
            self.on = False
        out = output[0].clone()
        out[:, -1] = again[0][:, -1]
        return (out, *output[1:])

    def record(self) -> dict[str, Any]:
        return {
            "layers": [self.layers[0], self.layers[-1]],
            "channel": self.channel,
            "position_correlation": self.correlation,
            "searched_on": None
            if self.correlation is None
            else f"{PROBE_PROMPTS} prompts of {PROBE_TOKENS} random-word tokens (seed "
            f"{PROBE_SEED}), positions < {SKIP} dropped",
        }
