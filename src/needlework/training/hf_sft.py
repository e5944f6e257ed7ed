"""Supervised finetuning with TRL's SFTTrainer: full, LoRA or QLoRA, loss on the answer only.

The paper's recipe (Xiong et al., "From Artificial Needles to Real Haystacks", ICLR 2025,
arXiv:2406.19292, §3 and App. A.1): Mistral-7B-Instruct-v0.1, 2 epochs, lr 5e-6, global batch 16,
loss on the answer tokens only. Multi-GPU: the same command under ``accelerate launch``.

Run:  needlework train --config configs/train/hf_tiny_cpu.yaml
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from needlework.config import config
from needlework.errors import ConfigError, UserError, first_line
from needlework.models.base import is_local_path
from needlework.registry import trainers
from needlework.runinfo import version
from needlework.training.chat import ChatFormat

if TYPE_CHECKING:
    from needlework.training.config import TrainConfig
    from needlework.training.data import ChatRow

# SFTConfig fields set from a dedicated field above; trl_overrides may not set them twice.
MANAGED = {
    "output_dir": "out_dir",
    "seed": "seed",
    "data_seed": "seed",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "per_device_train_batch_size": "per_device_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "lr_scheduler_type": "lr_scheduler",
    "lr_scheduler_kwargs": "lr_scheduler_kwargs",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "bf16": "bf16",
    "use_cpu": "bf16",
    "gradient_checkpointing": "gradient_checkpointing",
    "max_length": "max_length",
    "packing": "packing",
    "padding_free": "padding_free",
    "assistant_only_loss": "answer_only_loss",
    "completion_only_loss": "answer_only_loss",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "model_init_kwargs": "model_dtype",
    "chat_template_path": "chat_template_path",
}


@trainers.register("hf_sft")
@config
class HfSFT:
    """TRL SFTTrainer (+ PEFT LoRA/QLoRA) on local or multi-GPU hardware."""

    model_path: str
    """Base model: a local folder, a hub id (GPU machines), or ``tiny:<arch>[-h<H>][-l<L>]
    [-a<A>][-i<I>]`` to build a tiny random model in-process (tests, CPU demo)."""
    model_revision: str | None = None
    """Hub revision (commit sha or tag) to pin a hub ``model_path`` to; None = the hub's
    current version."""
    tokenizer_path: str | None = None
    """Tokenizer folder or hub id; default: the model's."""
    chat_template_path: str | None = None
    """A ``.jinja`` file replacing the tokenizer's chat template (saved with the result)."""
    system_prompt: str | None = None
    """None: rows as they are (the template adds its default system turn, if any); a string
    replaces every row's system turn ("" = an empty one). Evaluate with the same setting (the
    ``hf`` backend has the same field; recipes pass it to both)."""
    chat_format: ChatFormat = "auto"
    """How the answer-only mask is built: auto, assistant_mask, prompt_completion (see chat.py)."""
    answer_only_loss: bool = True
    """Loss on the answer (+ end-of-turn) tokens only, as the paper; False trains every token."""
    method: Literal["full", "lora", "qlora"] = "full"
    """Full finetuning, LoRA adapters, or LoRA on a 4-bit base (needs CUDA + bitsandbytes)."""

    # -- schedule
    epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs when > 0)."""
    learning_rate: float = 2e-5
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    global_batch_size: int | None = None
    """Examples per optimizer step over all GPUs; sets gradient accumulation from the number of
    processes at launch (so a recipe means the same on 1 or 8 GPUs)."""
    max_length: int | None = None
    """Token limit per example; None = the longest example (measured with the chat template).
    Training stops before it starts if any example is longer (TRL would drop it silently)."""
    lr_scheduler: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_steps: float = 0.0
    """Warmup steps (>= 1) or a fraction of the total steps (< 1)."""
    weight_decay: float = 0.0

    # -- LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    merge_lora: bool = False
    """Also save the adapter merged into the base weights (``merged/``; model.json points there)."""

    # -- speed and memory
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype at load. auto: float32 for full finetuning (bf16 autocast on top: updates of
    lr 5e-6 vanish in bf16 weights), bfloat16 for a frozen LoRA base when bf16 is on."""
    bf16: bool | None = None
    """bf16 autocast; None = on where it pays (bf16 GPUs; CPUs where a short probe measures bf16
    faster than float32, see ``needlework.runtime``); true forces it where bf16 is native;
    false forces float32."""
    gradient_checkpointing: bool | None = None
    """None = on with CUDA (long 4K-24K prompts), off on CPU."""
    packing: bool = False
    """Pack several examples per row (best-fit, no cross-attention between them)."""
    padding_free: bool = False
    """Concatenate the batch into one row without padding (best with flash attention)."""
    attn_implementation: str | None = None
    """e.g. ``flash_attention_2`` on GPU; None = the transformers default (sdpa)."""

    # -- logging and checkpoints
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    trl_overrides: dict[str, Any] = field(default_factory=dict)
    """Any other ``trl.SFTConfig`` field, passed through (e.g. ``optim``, ``adam_beta2``)."""

    def __post_init__(self) -> None:
        checks = [
            (self.epochs > 0, "epochs", f"expected > 0, got {self.epochs}"),
            (self.learning_rate > 0, "learning_rate", f"expected > 0, got {self.learning_rate}"),
            (self.per_device_batch_size >= 1, "per_device_batch_size", "expected >= 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "expected >= 1"),
            (
                self.max_length is None or self.max_length >= 8,
                "max_length",
                "expected None (auto) or >= 8",
            ),
            (self.warmup_steps >= 0, "warmup_steps", "expected >= 0"),
            (
                self.max_steps == -1 or self.max_steps >= 1,
                "max_steps",
                f"expected -1 (train for epochs) or >= 1, got {self.max_steps}",
            ),
            (self.lora_r >= 1, "lora_r", "expected >= 1"),
            (self.lora_alpha > 0, "lora_alpha", f"expected > 0, got {self.lora_alpha}"),
            (0.0 <= self.lora_dropout < 1.0, "lora_dropout", "expected in [0, 1)"),
            (self.logging_steps >= 1, "logging_steps", "expected >= 1"),
            (self.save_steps >= 1, "save_steps", "expected >= 1"),
            (
                not self.merge_lora or self.method != "full",
                "merge_lora",
                "needs method lora or qlora",
            ),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise ValueError(f"{name}: {msg}")
        if self.global_batch_size is not None:
            if self.gradient_accumulation_steps != 1:
                raise ValueError(
                    "global_batch_size: set it or gradient_accumulation_steps, not both"
                )
            if self.global_batch_size % self.per_device_batch_size:
                raise ValueError(
                    f"global_batch_size: {self.global_batch_size} is not a multiple "
                    f"of per_device_batch_size={self.per_device_batch_size}"
                )
        clash = sorted(set(self.trl_overrides) & set(MANAGED))
        if clash:
            raise ValueError(
                f"trl_overrides: {clash[0]!r} has its own field; set '{MANAGED[clash[0]]}' instead"
            )

    def preflight(self, cfg: TrainConfig) -> None:
        """Cheap checks, before a run folder or base model exists: GPU for QLoRA, trl_overrides
        keys and types, scheduler, attention, model and tokenizer sources, chat template, LoRA
        targets (each would otherwise be a traceback minutes later)."""
        import dataclasses

        from trl import SFTConfig

        from needlework.training import chat, hf_checks

        if self.method == "qlora":
            _require_qlora_support()
        known = {f.name for f in dataclasses.fields(SFTConfig)}
        unknown = sorted(set(self.trl_overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown trl.SFTConfig field {unknown[0]!r} (trl {version('trl')})",
                field="trainer.trl_overrides",
            )
        hf_checks.check_override_types(self.trl_overrides)
        hf_checks.check_schedule(self)
        hf_checks.check_attention(self.attn_implementation)
        if self.chat_template_path is not None and not Path(self.chat_template_path).is_file():
            raise ConfigError(
                f"file not found: {self.chat_template_path}", field="trainer.chat_template_path"
            )
        from needlework.models.gguf import is_gguf_spec

        if self.model_path.startswith("tiny:"):
            config, tokenizer = _tiny_preflight(self)
        else:
            check_model_source(self.model_path, "trainer.model_path")
            if self.tokenizer_path is not None:
                check_model_source(self.tokenizer_path, "trainer.tokenizer_path", need_config=False)
            if is_gguf_spec(self.model_path):  # config and tokenizer come with the import
                return
            config = _load_config(self)
            tokenizer = hf_checks.load_tokenizer(self, self.model_path)
        field_name = "trainer.chat_template_path"
        chat.set_chat_template(tokenizer, self.chat_template_path, field=field_name)
        chat.resolve_format(tokenizer, self.chat_format, field="trainer.chat_format")
        hf_checks.check_lora_targets(self, config)

    def train(
        self, cfg: TrainConfig, run_dir: Path, rows: list[ChatRow], *, resume: bool
    ) -> dict[str, Any]:
        from needlework.training.sft_run import run_sft

        return run_sft(self, cfg, run_dir, rows, resume=resume)


def _tiny_preflight(unit: HfSFT) -> tuple[Any, Any]:
    """(config, tokenizer) of a ``tiny:`` spec, built in memory: sizes that cannot work fail
    here instead of inside transformers once ``base_model/`` is being written."""
    from needlework.models.tiny import build_char_tokenizer, tiny_config
    from needlework.training.hf_checks import load_tokenizer
    from needlework.training.sft_run import tiny_kwargs

    tokenizer = build_char_tokenizer()
    try:
        config = tiny_config(tokenizer, **tiny_kwargs(unit.model_path))
    except ValueError as exc:
        raise ConfigError(f"{unit.model_path}: {exc}", field="trainer.model_path") from None
    if unit.tokenizer_path is not None:
        tokenizer = load_tokenizer(unit, unit.model_path)
    return config, tokenizer


def _load_config(unit: HfSFT) -> Any:
    """The base model's config (local folder or hub), or a one-line error naming the field."""
    from transformers import AutoConfig

    rev = {"revision": unit.model_revision} if unit.model_revision else {}
    try:
        return AutoConfig.from_pretrained(unit.model_path, **rev)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"trainer.model_path: cannot read the model config of {unit.model_path} "
            f"({first_line(exc)})"
        ) from None


def _require_qlora_support() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UserError(
            "trainer.method: qlora needs a CUDA GPU (bitsandbytes 4-bit weights); "
            "on CPU use method: lora or full"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "trainer.method: qlora needs the bitsandbytes package (pip install bitsandbytes)"
        )


def check_model_source(spec: str, field_name: str, *, need_config: bool = True) -> None:
    """A local folder must hold a checkpoint; a hub id must resolve (config.json only).

    A ``.gguf`` file or bundled alias is checked (file, magic bytes, sha256; imported later by
    ``resolve_model_path``); it holds its own tokenizer, so it is not a tokenizer_path.
    """
    from needlework.models.gguf import check_source, is_gguf_spec

    if is_gguf_spec(spec):
        if not need_config:
            raise UserError(
                f"{field_name}: {spec} is a GGUF model; its tokenizer comes with it as "
                f"trainer.model_path (leave {field_name} unset)"
            )
        try:
            check_source(spec)
        except UserError as exc:
            raise UserError(f"{field_name}: {exc}") from None
        return
    if is_local_path(spec):
        p = Path(spec).expanduser()
        if not p.is_dir():
            raise UserError(
                f"{field_name}: {spec} does not exist (expected a model folder or "
                f"a hub id like mistralai/Mistral-7B-Instruct-v0.1)"
            )
        if need_config and not (p / "config.json").is_file():
            raise UserError(f"{field_name}: {spec} has no config.json (not a saved model folder)")
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{field_name}: cannot load '{spec}' (not a local folder; hub lookup "
            f"failed: {first_line(exc)})"
        ) from None
