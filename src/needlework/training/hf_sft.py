"""Supervised finetuning with TRL's SFTTrainer: full, LoRA or QLoRA, loss on the answer only.

The paper's recipe (Xiong et al., "From Artificial Needles to Real Haystacks", ICLR 2025,
arXiv:2406.19292, §3 and App. A.1): Mistral-7B-Instruct-v0.1, 2 epochs, lr 5e-6, global batch 16,
loss on the answer tokens only. Multi-GPU: the same command under ``accelerate launch``.

Run:  needlework train --config configs/train/hf_tiny_cpu.yaml
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from needlework.config import PositiveInt, config
from needlework.errors import ConfigError, UserError, first_line
from needlework.models.base import load_failure
from needlework.models.gguf import is_local_path
from needlework.registry import trainers
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
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint (``auto_map`` in its config; only for models
    you trust). Off, such a model is an error naming this field; nothing is ever asked."""
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
    epochs: PositiveFloat = 1.0
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs when > 0)."""
    learning_rate: PositiveFloat = 2e-5
    per_device_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    global_batch_size: PositiveInt | None = None
    """Examples per optimizer step over all GPUs; sets gradient accumulation from the number of
    processes at launch (so a recipe means the same on 1 or 8 GPUs)."""
    max_length: Annotated[int, Field(ge=8)] | None = None
    """Token limit per example; None = the longest example (measured with the chat template).
    Training stops before it starts if any example is longer (TRL would drop it silently)."""
    lr_scheduler: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_steps: NonNegativeFloat = 0.0
    """Warmup steps (>= 1) or a fraction of the total steps (< 1)."""
    weight_decay: float = 0.0

    # -- LoRA
    lora_r: PositiveInt = 16
    lora_alpha: PositiveInt = 32
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
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
    logging_steps: PositiveInt = 10
    save_steps: PositiveInt = 500
    save_total_limit: int | None = 2
    trl_overrides: dict[str, Any] = field(default_factory=dict)
    """Any other ``trl.SFTConfig`` field, passed through (e.g. ``optim``, ``adam_beta2``)."""

    def __post_init__(self) -> None:
        gbs, clash = self.global_batch_size, sorted(set(self.trl_overrides) & set(MANAGED))
        checks = [
            (self.max_steps == -1 or self.max_steps >= 1, "max_steps",
             f"expected -1 (train for epochs) or >= 1, got {self.max_steps}"),
            (not self.merge_lora or self.method != "full", "merge_lora",
             "needs method lora or qlora"),
            (gbs is None or self.gradient_accumulation_steps == 1, "global_batch_size",
             "set it or gradient_accumulation_steps, not both"),
            (gbs is None or gbs % self.per_device_batch_size == 0, "global_batch_size",
             f"{gbs} is not a multiple of per_device_batch_size={self.per_device_batch_size}"),
            (not clash, "trl_overrides",
             f"{clash[0]!r} has its own field; set '{MANAGED[clash[0]]}' instead" if clash else ""),
        ]  # fmt: skip
        for ok, name, msg in checks:
            if not ok:
                raise ValueError(f"{name}: {msg}")

    def preflight(self, cfg: TrainConfig) -> None:
        """Cheap checks, before a run folder or base model exists: GPU for QLoRA, trl_overrides
        keys and types, scheduler, attention, model and tokenizer sources, chat template, LoRA
        targets (each would otherwise be a traceback minutes later)."""
        from needlework.models.gguf import is_gguf_spec
        from needlework.training import chat

        if self.method == "qlora":
            _require_qlora_support()
        from needlework.training.sft_run import trl_overrides

        trl_overrides(self)
        check_schedule(self)
        check_attention(self.attn_implementation)
        if self.model_path.startswith("tiny:"):
            config, tokenizer = _tiny_preflight(self)
        else:
            check_model_source(self.model_path, "trainer.model_path")
            if self.tokenizer_path is not None:
                check_model_source(self.tokenizer_path, "trainer.tokenizer_path", need_config=False)
            if is_gguf_spec(self.model_path):  # config and tokenizer come with the import
                return
            config = _load_config(self)
            tokenizer = load_tokenizer(self, self.model_path)
        field_name = "trainer.chat_template_path"
        chat.set_chat_template(tokenizer, self.chat_template_path, field=field_name)
        chat.resolve_format(tokenizer, self.chat_format, field="trainer.chat_format")
        check_lora_targets(self, config)

    def train(
        self, cfg: TrainConfig, run_dir: Path, rows: list[ChatRow], *, resume: bool
    ) -> dict[str, Any]:
        from needlework.training.sft_run import run_sft

        return run_sft(self, cfg, run_dir, rows, resume=resume)


def _tiny_preflight(unit: HfSFT) -> tuple[Any, Any]:
    """(config, tokenizer) of a ``tiny:`` spec, built in memory: sizes that cannot work fail
    here instead of inside transformers once ``base_model/`` is being written."""
    from needlework.models.tiny import build_char_tokenizer, tiny_config
    from needlework.training.sft_run import tiny_kwargs

    tokenizer = build_char_tokenizer()
    config = tiny_config(tokenizer, **tiny_kwargs(unit.model_path))
    if unit.tokenizer_path is not None:
        tokenizer = load_tokenizer(unit, unit.model_path)
    return config, tokenizer


def _load_config(unit: HfSFT) -> Any:
    """The base model's config (local folder or hub), or a one-line error naming the field."""
    from transformers import AutoConfig

    rev = {"revision": unit.model_revision} if unit.model_revision else {}
    try:
        return AutoConfig.from_pretrained(
            unit.model_path, trust_remote_code=unit.trust_remote_code, **rev
        )
    except (OSError, ValueError) as exc:
        what = f"trainer.model_path: cannot read the model config of {unit.model_path}"
        raise load_failure(exc, what, "trainer.trust_remote_code") from None


def _require_qlora_support() -> None:
    import importlib.util

    import torch

    have = {
        "a CUDA GPU": torch.cuda.is_available(),
        "the bitsandbytes package": importlib.util.find_spec("bitsandbytes") is not None,
    }
    missing = [what for what, ok in have.items() if not ok]
    if missing:
        raise UserError(
            f"trainer.method: qlora needs {' and '.join(missing)} (4-bit weights); on CPU use "
            "method: lora or full"
        )


def check_model_source(spec: str, field_name: str, *, need_config: bool = True) -> None:
    """A ``.gguf`` file or bundled alias is checked (file, magic bytes, sha256; imported later
    by ``resolve_model_path``) and is a model, never a tokenizer_path (its tokenizer comes with
    it); a local path must exist. What a folder or hub id holds is checked by loading it."""
    from needlework.models.gguf import check_source, is_gguf_spec

    problem = ""
    if is_gguf_spec(spec) and not need_config:
        problem = (
            f"{spec} is a GGUF model; its tokenizer comes with it as trainer.model_path "
            f"(leave {field_name} unset)"
        )
    elif is_gguf_spec(spec):
        try:
            check_source(spec)
        except UserError as exc:
            problem = str(exc)
    elif is_local_path(spec) and not Path(spec).expanduser().is_dir():
        problem = (
            f"{spec} does not exist (expected a model folder or a hub id like "
            "mistralai/Mistral-7B-Instruct-v0.1)"
        )
    if problem:
        raise UserError(f"{field_name}: {problem}")


# -- preflight checks: each asks the library's own public entry point, on a stand-in (a
# one-parameter optimizer, a meta-device model, the tokenizer's template compiler), so the
# answer is the library's, not a copy of its rules that could drift.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_schedule(unit: HfSFT) -> None:
    """Build the configured LR scheduler on a one-parameter optimizer (transformers'
    ``get_scheduler``, as the Trainer does): an unknown name or keyword fails here."""
    import torch
    from transformers import SchedulerType, get_scheduler

    field_name = "trainer.lr_scheduler"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        name = SchedulerType(unit.lr_scheduler)
        field_name += "_kwargs"
        kwargs = dict(unit.lr_scheduler_kwargs)
        get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10,
                      scheduler_specific_kwargs=kwargs)  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise ConfigError(first_line(exc, 400), field=field_name) from None


def check_attention(name: str | None) -> None:
    """A known attention implementation whose package is installed (flash-attn is optional)."""
    if name is None or "/" in name:  # the default, or a hub kernel (resolved by transformers)
        return
    import transformers.utils as tu
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    flash = name.startswith("flash_attention_")
    usable = (
        getattr(tu, f"is_flash_attn_{name.rsplit('_', 1)[-1]}_available", None) if flash else None
    )
    if name not in known:
        problem = f"unknown attention implementation {name!r} (expected one of: {', '.join(known)})"
    elif usable is not None and not usable(kernels_fallback_ok=True):
        problem = (
            f"{name} needs a CUDA GPU and its flash-attn package, not found here; leave it "
            "unset (sdpa)"
        )
    else:
        return
    raise ConfigError(problem, field="trainer.attn_implementation")


def load_tokenizer(unit: HfSFT, model_path: str) -> Any:
    """The tokenizer training will use (``tokenizer_path`` or the model's), or a one-line error
    naming the field whose folder holds none."""
    from transformers import AutoTokenizer

    field_name = "trainer.tokenizer_path" if unit.tokenizer_path else "trainer.model_path"
    source = unit.tokenizer_path or model_path
    local = Path(source).expanduser()
    if local.is_dir() and not any((local / name).is_file() for name in _TOKENIZER_FILES):
        hint = "" if unit.tokenizer_path else "; set trainer.tokenizer_path to a tokenizer folder"
        raise UserError(
            f"{field_name}: {source} holds no tokenizer (none of "
            f"{', '.join(_TOKENIZER_FILES)}){hint}"
        )
    rev = (
        {"revision": unit.model_revision} if unit.model_revision and not unit.tokenizer_path else {}
    )
    try:
        return AutoTokenizer.from_pretrained(
            source, trust_remote_code=unit.trust_remote_code, **rev
        )
    except (OSError, ValueError, TypeError) as exc:
        what = f"{field_name}: cannot load a tokenizer from {source}"
        raise load_failure(exc, what, "trainer.trust_remote_code") from None


def check_lora_targets(unit: HfSFT, text_config: Any) -> None:
    """``lora_target_modules`` names at least one module of the model (PEFT's own matcher, on a
    meta-device copy: no weights are read or allocated)."""
    if unit.method == "full" or unit.lora_target_modules == "all-linear":
        return
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                text_config, trust_remote_code=unit.trust_remote_code
            )
    except Exception:  # an architecture that cannot be built this way: PEFT checks at load
        return
    lora = LoraConfig(target_modules=unit.lora_target_modules, task_type="CAUSAL_LM")
    names = [name for name, _ in model.named_modules() if name]
    if not any(check_target_module_exists(lora, name) for name in names):
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})  # fmt: skip
        raise ConfigError(
            f"{unit.lora_target_modules!r} matches no module of the model "
            f"(its linear layers: {', '.join(linear)}; or all-linear)",
            field="trainer.lora_target_modules",
        )
