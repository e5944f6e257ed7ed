"""Offline vLLM engine (optional extra, GPU only): tensor parallel, LoRA, prefix caching.

Run:  pip install 'needlework[vllm]'   # on a CUDA machine; never on CPU/CI (it pins a CUDA torch)
      needlework eval --model vllm:mistralai/Mistral-7B-Instruct-v0.1 --benchmark mdqa

Prompts are built with the model's own chat template (the tokenizer vLLM loaded, with
``add_generation_prompt=True``) and passed as token ids, so the length check is exact and the
prompt is the same one the ``hf`` backend builds. Greedy sampling is explicit
(``temperature=0``). Prefix caching pays off on benchmarks that share long prefixes. ``vllm`` is
imported only when the model is first used.
"""

from __future__ import annotations

import json
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
    need,
    validate_conversations,
    warn_remote_code,
)
from needlework.models.hf import short_name
from needlework.records import Message
from needlework.registry import backends

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM accepts these max_lora_rank values


@backends.register("vllm")
@config
class VLLM(Weights, Streaming):
    """vLLM offline engine (GPU): batched greedy decoding with tensor parallelism and LoRA."""

    log_likelihoods: ClassVar[bool] = True
    speed_fields: ClassVar[frozenset[str]] = frozenset(
        {"tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching", "chunk_size"}
    )

    path: NonEmptyStr
    """Model folder or hub id."""
    adapter: str | None = None
    """PEFT LoRA adapter folder, served through a LoRARequest (base weights untouched)."""
    tensor_parallel_size: PositiveInt = 1
    """GPUs to shard the model over."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """auto, bfloat16, float16 or float32."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Fraction of GPU memory vLLM may take (weights + KV cache)."""
    max_model_len: PositiveInt | None = None
    """Context limit (prompt + new tokens); None takes the model's."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint (only for models you trust)."""
    chunk_size: PositiveInt = 512
    """Prompts per engine call; the runner saves predictions after each."""
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def describe(self) -> str:
        name = f"vllm:{short_name(self.path)}"
        return name + (f"+{short_name(self.adapter)}" if self.adapter else "")

    def lm_eval_model(self, batch_size: int | None) -> Any:
        """lm-eval's own vLLM model on these weights and settings (log-likelihoods work)."""
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(
            pretrained=self.path,
            lora_local_path=self.adapter,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            trust_remote_code=self.trust_remote_code,
            batch_size=batch_size or "auto",
        )

    def usage(self) -> dict[str, int]:
        return dict(self._state.get("usage", {}))

    # -- pieces that need no GPU (unit-tested with a fake vllm module) ----------------------
    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``."""
        if self.trust_remote_code:
            warn_remote_code(self.path)
        kwargs: dict[str, Any] = dict(
            model=self.path,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            enable_prefix_caching=self.enable_prefix_caching,
            trust_remote_code=self.trust_remote_code,
        )
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.adapter:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=self._lora_rank())
        return kwargs

    def _lora_rank(self) -> int:
        """The adapter's LoRA rank (``r`` of its adapter_config.json) rounded up to one vLLM
        accepts."""
        cfg_path = Path(self.adapter or "") / "adapter_config.json"
        try:
            rank = int(json.loads(cfg_path.read_text(encoding="utf-8"))["r"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(
                f"vllm: {cfg_path}: expected a PEFT adapter_config.json with an integer 'r' "
                "(LoRA rank)"
            ) from None
        return next((r for r in LORA_RANKS if r >= rank), rank)

    def sampling_params(self, vllm: Any, max_new_tokens: int) -> Any:
        """Explicit greedy decoding: a model's generation_config must not switch on sampling."""
        return vllm.SamplingParams(
            n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=max_new_tokens
        )

    def lora_request(self) -> Any:
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("adapter", 1, str(Path(self.adapter).resolve()))

    # -- engine ----------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if "llm" in self._state:
            return self._state
        vllm = need(
            "vllm",
            "vllm",
            "pip install 'needlework[vllm]' on a CUDA machine; on CPU use the hf backend",
        )
        kwargs = self.engine_kwargs()
        llm = vllm.LLM(**kwargs)
        limit = self.max_model_len
        if limit is None:  # vLLM rejects longer prompts itself; this gives our clearer error
            config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
            limit = getattr(config, "max_model_len", None)
        self._state.update(
            vllm=vllm,
            llm=llm,
            tok=llm.get_tokenizer(),
            limit=limit,
            lora=self.lora_request(),
            usage={"requests": 0, "prompt_tokens": 0, "completion_tokens": 0},
        )
        return self._state

    def encode(self, conversations: Sequence[Sequence[Message]]) -> list[list[int]]:
        tok = self._load()["tok"]
        return [
            list(
                tok.apply_chat_template(
                    [dict(m) for m in conv],
                    tokenize=True,
                    add_generation_prompt=True,
                    return_dict=False,
                )
            )
            for conv in conversations
        ]

    def generate_iter(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int,
    ) -> Iterator[tuple[int, str]]:
        """Check every prompt's length first, then run ``chunk_size`` prompts per engine call."""
        validate_conversations(conversations)
        st = self._load()
        encoded = self.encode(conversations)
        check_prompt_lengths(
            [len(x) for x in encoded],
            limit=st["limit"],
            max_new_tokens=max_new_tokens,
            model=self.describe(),
        )
        params = self.sampling_params(st["vllm"], max_new_tokens)
        for start in range(0, len(encoded), self.chunk_size):
            chunk = encoded[start : start + self.chunk_size]
            outs = st["llm"].generate(
                [{"prompt_token_ids": ids} for ids in chunk],
                params,
                lora_request=st["lora"],
                use_tqdm=False,
            )
            for k, (ids, out) in enumerate(zip(chunk, outs, strict=True)):
                completion = out.outputs[0]
                st["usage"]["requests"] += 1
                st["usage"]["prompt_tokens"] += len(ids)
                st["usage"]["completion_tokens"] += len(completion.token_ids)
                yield start + k, completion.text
