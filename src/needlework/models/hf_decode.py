"""Lean batched greedy decoding for the ``hf`` backend: per-prompt prefill, batched decode steps.

Why not ``model.generate`` on the batch: on CPU a decode step of a tiny/small model is dominated by
fixed per-step costs, and ``generate`` adds its own (mask building over the whole static cache,
stopping criteria, logits processors, cache bookkeeping), while a static cache makes every step
attend over all ``prompt + max_new_tokens`` slots. Here each step is one ``model.forward`` on the
batch's last tokens with a precomputed 4D mask sliced to the slots filled so far, and the cache
returns only those slots (a preallocated buffer written in place, never re-concatenated).

Layout: row ``r`` holds its prompt in slots ``[0, n_r)`` (left-aligned, its first new token comes
from its own prefill), later tokens of every row go to the shared slots ``width, width + 1, ...``;
each row sees its own prompt slots and the new slots, with its own positions, so it continues
exactly as it would alone.

Public surface only: ``Cache``, ``CacheLayerMixin`` and ``DynamicLayer`` are exported by
``transformers`` (imported here from ``transformers.cache_utils``, where its type stubs see them)
and documented as the cache extension point ("Utilities for Generation" →
Caches: a layer implements ``update``, ``lazy_initialization``, ``get_seq_length``,
``get_mask_sizes``, ``get_max_length`` in 5.24). docs/evaluation.md measures what this loop pays.
"""

from __future__ import annotations

from typing import Any

# Generation-config fields that would add a logits processor or stopping rule to ``generate``;
# when any is set the lean loop would not reproduce it, so the caller uses ``generate`` instead.
_PROCESSOR_FIELDS = (
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "renormalize_logits",
    "remove_invalid_values",
    "guidance_scale",
    "watermarking_config",
    "stop_strings",
    "max_time",
    "assistant_model",
    "prompt_lookup_num_tokens",
)


def lean_ok(model: Any, gen: Any) -> bool:
    """True when plain argmax decoding through ``model.forward`` matches ``generate``."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        return False
    if getattr(gen, "do_sample", False) or (getattr(gen, "num_beams", 1) or 1) > 1:
        return False
    for name in _PROCESSOR_FIELDS:
        value = getattr(gen, name, None)
        if name == "repetition_penalty" and value == 1.0:
            continue
        if value is not None and value is not False and value != 0 and value != []:
            return False
    return True


def _cache_classes() -> tuple[type, type]:
    """Defined lazily: ``transformers`` is a heavy import."""
    from transformers.cache_utils import Cache, CacheLayerMixin  # = transformers.CacheLayerMixin

    class FilledPrefixLayer(CacheLayerMixin):
        """Preallocated keys/values; ``update`` writes in place, returns the filled prefix."""

        is_compileable = False
        is_sliding = False
        keys: Any  # preallocated tensors, never None (the base class allows None)
        values: Any

        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self.keys, self.values, self.length = keys, values, length
            self.is_initialized = True

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            """Never called: the layer is created initialised."""

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any):
            end = self.length + key_states.shape[-2]
            self.keys[:, :, self.length : end] = key_states
            self.values[:, :, self.length : end] = value_states
            self.length = end
            return self.keys[:, :, :end], self.values[:, :, :end]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.length + query_length, 0

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.keys.shape[2]

    return Cache, FilledPrefixLayer


def prefill(model: Any, batch: list[list[int]], max_new_tokens: int, device: Any) -> Any:
    """Run each prompt alone (no pads: the fast causal kernel and exactly the numbers of
    unbatched generation; prefill compute does not shrink with batching on CPU) and keep its
    first greedy token; the keys/values go left-aligned into one preallocated cache with room for
    the remaining new tokens. Returns ``(cache, first_tokens)``."""
    import torch

    Cache, FilledPrefixLayer = _cache_classes()
    width = max(len(x) for x in batch)
    keys: list[Any] = []
    values: list[Any] = []
    first = []
    for row, x in enumerate(batch):
        out = model(input_ids=torch.tensor([x], device=device), use_cache=True, logits_to_keep=1)
        first.append(out.logits[0, -1].argmax(-1))
        layers = getattr(out.get("cache", None) or out.get("past_key_values", None), "layers", None)
        if not layers or not all(plain_layer(layer) for layer in layers):
            raise RuntimeError("unexpected cache layers; set fast_prefill: false")
        for i, layer in enumerate(layers):
            k, v = layer.keys, layer.values
            if row == 0:
                # Unused slots stay zero (masked, but garbage could be NaN and 0 * NaN = NaN).
                shape = (len(batch), k.shape[1], width + max_new_tokens - 1, k.shape[3])
                keys.append(k.new_zeros(shape))
                values.append(v.new_zeros(shape[:3] + v.shape[3:]))
            keys[i][row, :, : len(x)] = k[0]
            values[i][row, :, : len(x)] = v[0]
    cache = Cache(layers=[FilledPrefixLayer(k, v, width) for k, v in zip(keys, values)])
    return cache, torch.stack(first)


def greedy_decode(
    model: Any,
    batch: list[list[int]],
    max_new_tokens: int,
    *,
    eos: set[int],
    pad: int,
    device: Any,
    cache_kw: str = "cache",
) -> list[list[int]]:
    """New token ids of each row (eos included if reached, pads after it), argmax each step."""
    import torch

    cache, nxt = prefill(model, batch, max_new_tokens, device)
    width = max(len(x) for x in batch)
    slots = torch.arange(width + max_new_tokens - 1, device=device)
    lengths = torch.tensor([len(x) for x in batch], device=device)
    # Additive mask (sdpa and eager both take it): own prompt slots and the shared new slots.
    hidden = (slots[None, :] >= lengths[:, None]) & (slots[None, :] < width)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(hidden.shape, dtype=dtype, device=device)
    mask = mask.masked_fill_(hidden, torch.finfo(dtype).min)[:, None, None, :]
    positions = lengths[:, None].clone()
    eos_t = torch.tensor(sorted(eos), device=device)
    done = torch.isin(nxt, eos_t)
    steps = [nxt]
    for t in range(1, max_new_tokens):
        if bool(done.all()):
            break
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask[..., : width + t],
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: cache},
        )
        nxt = torch.where(done, pad, out.logits[:, -1].argmax(-1))
        steps.append(nxt)
        done |= torch.isin(nxt, eos_t)
        positions += 1
    return torch.stack(steps, dim=1).tolist()


def plain_layer(layer: Any) -> bool:
    """A full-attention dynamic cache layer (not sliding, not quantized, not linear: those
    subclass ``DynamicLayer`` or stand apart, so the exact type is checked)."""
    from transformers.cache_utils import DynamicLayer

    return (
        type(layer) is DynamicLayer
        and not getattr(layer, "is_sliding", False)
        and getattr(layer, "keys", None) is not None
    )
