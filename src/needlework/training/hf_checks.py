"""``hf_sft`` preflight: every setting that would otherwise fail deep inside transformers/TRL/PEFT
(with a traceback, after the run folder and a base model exist) is tried here first, cheaply.

Each check uses the library's own public entry point on a stand-in (a one-parameter optimizer for
the scheduler, a meta-device model for LoRA targets, the tokenizer's own template compiler), so
the answer is the library's, not a copy of its rules that could drift.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from needlework.errors import ConfigError, UserError, first_line

if TYPE_CHECKING:
    from needlework.training.hf_sft import HfSFT

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_schedule(unit: HfSFT) -> None:
    """Build the configured LR scheduler on a one-parameter optimizer (transformers'
    ``get_scheduler``, as the Trainer does): an unknown name or keyword fails here."""
    import torch
    from transformers import SchedulerType, get_scheduler

    try:
        name = SchedulerType(unit.lr_scheduler)
    except ValueError:
        choices = ", ".join(s.value for s in SchedulerType)
        raise ConfigError(
            f"unknown scheduler {unit.lr_scheduler!r} (expected one of: {choices})",
            field="trainer.lr_scheduler",
        ) from None
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        get_scheduler(
            name,
            optimizer,
            num_warmup_steps=1,
            num_training_steps=10,
            scheduler_specific_kwargs=dict(unit.lr_scheduler_kwargs),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"not accepted by the {name.value} scheduler ({first_line(exc)})",
            field="trainer.lr_scheduler_kwargs",
        ) from None


def check_override_types(overrides: dict[str, Any]) -> None:
    """Each ``trl_overrides`` value has the type its ``SFTConfig`` field declares (TRL does not
    check: ``adam_beta2: banana`` would fail inside the optimizer)."""
    from trl import SFTConfig

    try:
        hints = typing.get_type_hints(SFTConfig)
    except Exception:  # unresolvable annotations in some version: leave it to TRL
        return
    for key, value in overrides.items():
        if key in hints and not _accepts(hints[key], value):
            raise ConfigError(
                f"{key}: expected {_type_name(hints[key])}, got {value!r}",
                field="trainer.trl_overrides",
            )


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` (parsed YAML) fits the annotation; unknown annotations accept anything."""
    import enum

    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint} or isinstance(value, hint)
    if origin in (list, dict, tuple) or hint in (list, dict, tuple):
        return isinstance(value, origin or hint)
    return True


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) is not typing.Literal:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_attention(name: str | None) -> None:
    """A known attention implementation whose package is installed (flash-attn is optional)."""
    if name is None or "/" in name:  # the default, or a hub kernel (resolved by transformers)
        return
    import transformers.utils as tu
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name not in known:
        raise ConfigError(
            f"unknown attention implementation {name!r} (expected one of: {', '.join(known)})",
            field="trainer.attn_implementation",
        )
    if name.startswith("flash_attention_"):
        available = getattr(tu, f"is_flash_attn_{name.rsplit('_', 1)[1]}_available", None)
        if available is not None and not available(kernels_fallback_ok=True):
            raise ConfigError(
                f"{name} needs a CUDA GPU and its flash-attn package, not found here; "
                "leave it unset (sdpa)",
                field="trainer.attn_implementation",
            )


def load_tokenizer(unit: HfSFT, model_path: str) -> Any:
    """The tokenizer training will use (``tokenizer_path`` or the model's), or a one-line error
    naming the field whose folder holds none."""
    from transformers import AutoTokenizer

    field = "trainer.tokenizer_path" if unit.tokenizer_path else "trainer.model_path"
    source = unit.tokenizer_path or model_path
    local = Path(source).expanduser()
    if local.is_dir() and not any((local / name).is_file() for name in _TOKENIZER_FILES):
        hint = "" if unit.tokenizer_path else "; set trainer.tokenizer_path to a tokenizer folder"
        raise UserError(
            f"{field}: {source} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES)}){hint}"
        )
    rev = (
        {"revision": unit.model_revision} if unit.model_revision and not unit.tokenizer_path else {}
    )
    try:
        return AutoTokenizer.from_pretrained(source, **rev)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"{field}: cannot load a tokenizer from {source} ({first_line(exc)})"
        ) from None


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
            model = AutoModelForCausalLM.from_config(text_config)
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
