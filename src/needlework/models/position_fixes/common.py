"""What the three position fixes share: layer ranges, the attention route, labels."""

from __future__ import annotations

import itertools
import sys
import weakref
from typing import Annotated, Any

from needlework.config import NonNegativeInt, Ordered
from needlework.errors import UserError

PAPER_DEPTH = 32
"""Every paper states its layers for 32-layer 7B models; ranges are scaled to other depths."""


Layers = Annotated[tuple[NonNegativeInt, NonNegativeInt], Ordered]
"""First and last layer a fix changes, 0-based."""


def layer_range(layers: tuple[int, int] | None, paper: tuple[int, int], model: Any, fix: str):
    """The layers a fix changes: ``layers`` as given, or the paper's range on its 32-layer
    models scaled to this model's depth (rounded, capped at the last layer)."""
    n = len(decoder_layers(model))
    if layers is None:
        lo, hi = (round(x * n / PAPER_DEPTH) for x in paper)
        return range(min(lo, n - 1), min(hi, n - 1) + 1)
    if layers[1] >= n:
        raise UserError(f"{fix}: layers: the model has layers 0-{n - 1}, got {list(layers)}")
    return range(layers[0], layers[1] + 1)


def decoder_layers(model: Any) -> Any:
    """The decoder blocks (Llama-style models: ``model.model.layers``)."""
    return model.get_decoder().layers


_ROUTES = itertools.count()


def route_attention(model: Any, handler: Any) -> None:
    """Send every attention call of ``model`` through ``handler(module, original, query, key,
    value, mask, **kwargs)``, where ``original`` is the model's own attention function
    (sdpa or eager) for what the handler leaves alone.

    ``handler`` is a bound method of the fix's runtime. Public API: a function registered in
    ``AttentionInterface`` under a name of its own, with the model's own mask function
    registered for that name in ``AttentionMaskInterface`` (without it transformers builds no
    mask), then ``set_attn_implementation``.
    """
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    own = model.config._attn_implementation
    if own not in ("sdpa", "eager"):
        raise UserError(f"position fixes need sdpa or eager attention, the model uses {own}")
    name = f"needlework_fix_{next(_ROUTES)}"
    weak = weakref.WeakMethod(handler)  # the global registry must not keep the model alive,
    model._needlework_fix = handler.__self__  # the model keeps its fix alive

    def attention(module: Any, *args: Any, **kwargs: Any) -> Any:
        eager = sys.modules[type(module).__module__].eager_attention_forward
        original = ALL_ATTENTION_FUNCTIONS.get_interface(own, eager)
        return weak()(module, original, *args, **kwargs)  # type: ignore[misc]

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[own])
    model.set_attn_implementation(name)


def last_row_probs(query: Any, key: Any, mask: Any, scaling: float) -> Any:
    """Attention probabilities (float32) of the last query over every key, per head: [H, kv].
    Keys are shared by groups of query heads (GQA) and repeated here."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    logits = (query[:, :, -1:] @ key.transpose(-1, -2)).float() * scaling
    if mask is not None:  # bool: True = visible; float: added
        last = mask[..., -1:, :]
        logits = logits.masked_fill(~last, float("-inf")) if last.dtype == bool else logits + last
    return logits.softmax(-1)[0, :, 0]


def label(short: str, **values: Any) -> str:
    """``short(k=v,...)`` for ``describe()``, values as ``%g``, unset ones left out."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    return f"{short}({','.join(p for p, v in zip(parts, values.values()) if v is not None)})"
