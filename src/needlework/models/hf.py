"""Local Hugging Face ``transformers`` model (+ optional PEFT LoRA adapter), greedy, batched.

Run:  needlework eval --model hf:./runs/train/model --benchmark mdqa --limit 20

Prompts are the model's own chat template with ``add_generation_prompt=True``. Batches are
length-sorted (longest first, so an out-of-memory shows up in the first batch); results come back
in the caller's order. Each prompt of a batch is prefilled alone and the decode steps run batched
from one preallocated cache through a lean greedy loop over ``model.forward`` (``hf_decode``);
models it cannot reproduce (logits processors in their generation config, a non-sdpa/eager
attention, sliding windows) use the textbook LEFT-padded ``generate``. In float32 both give the
text of one-at-a-time generation (tested). A prompt that does not fit
``prompt + max_new_tokens <= context`` is an error, never truncated. A ``position_fix``
(``models/position_fixes``) generates one prompt at a time with ``generate``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from needlework.config import NonEmptyStr, PositiveInt, config
from needlework.errors import UserError
from needlework.models.base import (
    Streaming,
    Weights,
    check_prompt_lengths,
    load_failure,
    validate_conversations,
    warn_remote_code,
)
from needlework.models.gguf import cached_import, display_name, is_gguf_spec, is_local_path
from needlework.models.hf_decode import greedy_decode, lean_ok
from needlework.models.position_fixes import PositionFix
from needlework.records import Message, with_system_prompt
from needlework.registry import backends

_GENERIC_NAMES = {"adapter", "model", "final", "merged", "output", "lora"}


def short_name(path: str) -> str:
    """Last path component, with its parent when the name alone says nothing (``adapter``)."""
    p = Path(path.rstrip("/"))
    if p.name.lower() in _GENERIC_NAMES or p.name.startswith("checkpoint-"):
        return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
    return p.name


@backends.register("hf")
@config
class HF(Weights, Streaming):
    """A local or hub transformers causal LM (+ LoRA), greedy, length-sorted batches."""

    log_likelihoods: ClassVar[bool] = True
    speed_fields: ClassVar[frozenset[str]] = frozenset({"batch_size", "device", "fast_prefill"})

    path: NonEmptyStr
    """Model folder (``save_pretrained`` output) or hub id (needs the network or a cache)."""
    adapter: str | None = None
    """PEFT LoRA adapter folder; merged into the base weights after loading."""
    revision: str | None = None
    """Hub revision to pin a hub model to (a commit sha, tag or branch); None = the hub's
    current version. The commit actually loaded is recorded in run.json either way."""
    dtype: Literal["auto", "fastest", "float32", "bfloat16", "float16"] = "auto"
    """auto (the checkpoint's stored dtype), fastest (bf16 on bf16 GPUs and on CPUs where it
    measures faster, else float32; see ``needlework.runtime``), float32, bfloat16 or float16."""
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?)$")] = "auto"
    """auto (cuda if available, else cpu), or a torch device: cpu, cuda, cuda:N, mps, xpu..."""
    batch_size: PositiveInt = 8
    """Prompts per forward pass; lower it if memory runs out on long prompts."""
    max_context_tokens: PositiveInt | None = None
    """Context limit for prompt + new tokens; None reads max_position_embeddings."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint folder (only for models you trust)."""
    system_prompt: str | None = None
    """None: the conversation as given (the template adds its default system turn, if any); a
    string replaces the system turn ("" = an empty one). Set it as in training (same field)."""
    fast_prefill: bool = True
    """Prefill each prompt alone, then decode the batch from one preallocated cache (in float32
    the same tokens as left-padded ``generate``; 1.45x faster on CPU for SmolLM2, see
    docs/evaluation.md for bf16); models the lean loop cannot reproduce use left padding."""
    position_fix: PositionFix | None = None
    """An inference-time fix of position bias, ``{name: attn_calibration | channel_scale |
    ms_poe, ...}`` (docs/models.md); recorded in run.json and the model's label. Generation then
    runs one prompt at a time (batch_size and fast_prefill have no effect)."""
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def describe(self) -> str:
        base = display_name(self.path) if is_gguf_spec(self.path) else short_name(self.path)
        name = f"hf:{base}" + (f"+{short_name(self.adapter)}" if self.adapter else "")
        return name + (f"+{self.position_fix.label()}" if self.position_fix else "")

    def lm_eval_model(self, batch_size: int | None) -> Any:
        """lm-eval's own HF model on these weights and settings (log-likelihoods work); None
        with a position fix, which that model would not apply (lm-eval then uses generate)."""
        if self.position_fix is not None:
            return None
        from lm_eval.models.huggingface import HFLM

        device = _device(self.device)
        return HFLM(
            pretrained=self.source(),
            revision=self.revision or "main",
            peft=self.adapter,
            dtype=self.dtype_name(),
            device=device,
            batch_size=batch_size or self.batch_size,
            max_length=self.max_context_tokens,
            trust_remote_code=self.trust_remote_code,
        )

    def usage(self) -> dict[str, int]:
        return dict(self._state.get("usage", {}))

    def provenance(self) -> dict[str, Any]:
        """What was loaded, for run.json: the hub commit (transformers records it, also for a
        cached hub model) or the sha256 of a local folder's weight files, and the adapter's."""
        from needlework.models.base import folder_sha256

        out: dict[str, Any] = {"path": self.path, "revision": self.revision}
        src = Path(self.source())
        if src.is_dir():
            out["weights_sha256"] = folder_sha256(src)
        elif "model" in self._state:
            out["commit"] = getattr(self._state["model"].config, "_commit_hash", None)
        if self.adapter:
            out["adapter_sha256"] = folder_sha256(Path(self.adapter))
        if self.position_fix is not None:  # settings, and what loading derived (channel, ...)
            out["position_fix"] = dataclasses.asdict(self.position_fix)
            if self._state.get("fix") is not None:
                out["position_fix"].update(self._state["fix"].record())
        return out

    # -- loading ---------------------------------------------------------------------------
    def source(self) -> str:
        """What ``from_pretrained`` gets: a local folder (a .gguf file or bundled alias is
        imported once into the cache first) or a hub id. Shared with the lm-eval glue."""
        path = self.path
        if is_gguf_spec(path):
            path = str(cached_import(path))
        local = Path(path).expanduser()
        if not local.exists() and is_local_path(path):
            raise UserError(f"hf: model folder not found: {self.path}")
        return str(local) if local.exists() else path

    def dtype_name(self) -> str:
        """``dtype`` with ``fastest`` decided for this machine (auto stays auto)."""
        from needlework.runtime import bf16_preferred

        if self.dtype == "fastest":
            return "bfloat16" if bf16_preferred() else "float32"
        return self.dtype

    def _load(self) -> dict[str, Any]:
        if "model" in self._state:
            return self._state
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = self.source()
        if self.trust_remote_code:
            warn_remote_code(src)
        device = _device(self.device)
        name = self.dtype_name()
        dtype: Any = name if name == "auto" else getattr(torch, name)
        try:
            pin = {"revision": self.revision} if self.revision else {}
            tok = AutoTokenizer.from_pretrained(
                src, trust_remote_code=self.trust_remote_code, **pin
            )
            model = AutoModelForCausalLM.from_pretrained(
                src, dtype=dtype, trust_remote_code=self.trust_remote_code, **pin
            )
            if self.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
        except (OSError, ValueError) as exc:  # no weights / config, no usable tokenizer files
            what = f"hf: cannot load model '{self.path}'" + (
                f" + adapter {self.adapter}" if self.adapter else ""
            )
            if (Path(src) / "model.json").is_file():
                what += " (a training run folder: pass it without hf:, or its model/ folder)"
            raise load_failure(exc, what, "trust_remote_code") from None
        # transformers types .to() as a decorated wrapper expecting the model first
        model.to(device).eval()  # type: ignore[arg-type]
        if not getattr(tok, "chat_template", None):
            raise UserError(
                f"hf: the tokenizer of '{self.path}' has no chat template; "
                f"instruction models ship one in tokenizer_config.json or "
                f"chat_template.jinja"
            )
        eos = _as_list(model.generation_config.eos_token_id) + _as_list(tok.eos_token_id)
        eos = list(dict.fromkeys(eos))
        if not eos:
            raise UserError(f"hf: '{self.path}' defines no eos token: generation would not stop")
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        gen = copy.deepcopy(model.generation_config)
        # Explicit greedy decoding: a checkpoint's sampling defaults must not leak in.
        gen.update(
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            min_p=None,
            typical_p=None,
            repetition_penalty=None,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        # Every batch has its own shape: transformers' auto-compile of static caches on CUDA
        # would recompile per batch (seconds each), so it stays off.
        gen.disable_compile = True
        import inspect

        params = inspect.signature(model.forward).parameters
        fix = self.position_fix.start(model, tok) if self.position_fix else None
        self._state.update(
            model=model,
            tok=tok,
            device=device,
            eos=set(eos),
            pad=pad,
            gen=gen,
            limit=self._context_limit(model, tok),
            fast=self.fast_prefill and _fast_path_ok(model) and lean_ok(model, gen) and not fix,
            fix=fix,
            cache_kw="cache" if "cache" in params else "past_key_values",
            usage={"requests": 0, "batches": 0, "prompt_tokens": 0, "completion_tokens": 0},
        )
        return self._state

    def _context_limit(self, model: Any, tok: Any) -> int:
        if self.max_context_tokens is not None:
            return self.max_context_tokens
        cfg = (
            model.config.get_text_config()
            if hasattr(model.config, "get_text_config")
            else model.config
        )
        limit = getattr(cfg, "max_position_embeddings", None)
        if limit is None and 0 < getattr(tok, "model_max_length", 0) < 10**7:
            limit = tok.model_max_length
        if limit is None:
            raise UserError(
                f"hf: cannot tell the context length of '{self.path}'; set max_context_tokens"
            )
        return int(limit)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as this model writes it (sizes answer budgets)."""
        return len(self._load()["tok"].encode(text, add_special_tokens=False))

    # -- generation ------------------------------------------------------------------------
    def encode(
        self, conversations: Sequence[Sequence[Message]], *, tokenize: bool = True
    ) -> list[Any]:
        """Token ids of each conversation through the chat template, ready for generation (or
        the template's text, ``tokenize=False``)."""
        st = self._load()
        out = []
        for conv in conversations:
            ids = st["tok"].apply_chat_template(
                with_system_prompt(
                    [{"role": m["role"], "content": m["content"]} for m in conv],
                    self.system_prompt,
                ),
                tokenize=tokenize,
                add_generation_prompt=True,
                return_dict=False,
            )
            out.append(list(ids) if tokenize else ids)
        return out

    def generate_iter(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int,
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` batch by batch, longest prompts first."""
        validate_conversations(conversations)
        st = self._load()
        encoded = self.encode(conversations)
        check_prompt_lengths(
            [len(x) for x in encoded],
            limit=st["limit"],
            max_new_tokens=max_new_tokens,
            model=self.describe(),
        )
        order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
        if st["fix"] is not None:  # one prompt at a time, with its text (the fix reads it)
            texts = self.encode(conversations, tokenize=False)
            for i in order:
                with st["fix"].prompt(encoded[i], texts[i]):
                    out = self._generate_batch([encoded[i]], max_new_tokens)[0]
                yield i, out
            return
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            outs = self._generate_batch([encoded[i] for i in idx], max_new_tokens)
            yield from zip(idx, outs)

    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int) -> list[str]:
        import torch

        st = self._state
        gen = copy.copy(st["gen"])
        gen.max_new_tokens = max_new_tokens
        with torch.inference_mode():
            # A lone prompt needs no padding: plain generate is already the best path for it.
            if st["fast"] and len(batch) > 1:
                kw = {k: st[k] for k in ("eos", "pad", "device", "cache_kw")}
                rows = greedy_decode(st["model"], batch, max_new_tokens, **kw)
            else:
                ids, mask = _left_padded(batch, st["pad"])
                out = st["model"].generate(
                    input_ids=ids.to(st["device"]),
                    attention_mask=mask.to(st["device"]),
                    generation_config=gen,
                )
                rows = out[:, ids.shape[1] :].tolist()
        texts = []
        for row in rows:
            cut = next((k for k, t in enumerate(row) if t in st["eos"]), len(row))
            texts.append(st["tok"].decode(row[:cut], skip_special_tokens=True))
            st["usage"]["completion_tokens"] += cut
        st["usage"]["requests"] += len(batch)
        st["usage"]["batches"] += 1
        st["usage"]["prompt_tokens"] += sum(len(x) for x in batch)
        return texts


def _device(spec: str) -> str:
    """``auto`` resolved (cuda if torch sees a GPU, else cpu); a CUDA device on a machine
    without one is a one-line error rather than an assertion deep in torch."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"hf: device: {spec!r} asked for, but torch sees no CUDA GPU here")
    return spec


def _left_padded(batch: list[list[int]], pad: int) -> tuple[Any, Any]:
    """The textbook batch layout: pads first, so every row's last token is in the last column."""
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[row, width - len(x) :] = 1
    return ids, mask


def _fast_path_ok(model: Any) -> bool:
    """Per-prompt prefill into one cache needs full attention everywhere and
    ``logits_to_keep``."""
    import inspect

    cfg = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    if getattr(cfg, "sliding_window", None) or getattr(model.config, "is_encoder_decoder", False):
        return False
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return False
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return [int(v) for v in x] if isinstance(x, (list, tuple)) else [int(x)]
