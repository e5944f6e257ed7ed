"""One ``hf_sft`` training run: measure, configure TRL, check nothing is dropped, train, save.

Order matters: everything cheap (tokenizer, chat template, token lengths against ``max_length``)
runs before the model is loaded. Under ``accelerate launch`` every process runs this function; only
global rank 0 writes run files, and all processes take part in ``save_model`` (ZeRO-3 and FSDP
gather the weights there).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from needlework.config import validate
from needlework.errors import ConfigError, UserError, first_line
from needlework.records import with_system_prompt
from needlework.training import chat
from needlework.training.data import ChatRow, chat_row
from needlework.training.runfiles import (
    BASE_DIR,
    CHECKPOINTS,
    MERGED_DIR,
    MODEL_DIR,
    is_main_process,
    update_run_info,
)
from needlework.training.trainlog import whole_run_loss

_TINY = re.compile(r"tiny:(llama|mistral|qwen2)((?:-[hlai]\d+)*)$")


def tiny_kwargs(spec: str) -> dict[str, Any]:
    """``tiny:llama-h128-l2-a4[-i512]`` -> build_tiny_model kwargs (defaults: h64 l2 a4 i=4h);
    sizes that cannot work are refused here (transformers would fail later with a
    ZeroDivisionError or a shape error)."""
    m = _TINY.match(spec)
    knobs = {p[0]: int(p[1:]) for p in m.group(2).split("-") if p} if m else {}
    hidden, heads = knobs.get("h", 64), knobs.get("a", 4)
    sizes = {"hidden": hidden, "layers": knobs.get("l", 2), "heads": heads,
             "ffn": knobs.get("i", 4 * hidden)}  # fmt: skip
    small = [f"{k}={v}" for k, v in sizes.items() if v < 1]
    if not m:
        problem = "expected tiny:<llama|mistral|qwen2>[-h<hidden>][-l<layers>][-a<heads>][-i<ffn>]"
    elif small:
        problem = f"{', '.join(small)}: sizes must be >= 1"
    elif hidden % heads or (hidden // heads) % 2:
        problem = (
            f"hidden={hidden} must split into heads={heads} of an even size (rotary "
            f"embeddings), e.g. hidden={max(2, heads) * 16}"
        )
    else:
        return {"arch": m.group(1), "hidden_size": hidden, "num_layers": sizes["layers"],
                "num_heads": heads, "intermediate_size": sizes["ffn"]}  # fmt: skip
    raise ConfigError(f"bad tiny model spec {spec!r}: {problem}", field="trainer.model_path")


def resolve_model_path(unit, cfg, run_dir: Path) -> str:
    """A local absolute path or a hub id; ``tiny:`` specs are built into ``base_model/``.

    A ``.gguf`` file or bundled alias is imported once into the model cache (float32: the
    dequantized weights exactly; ``model_dtype`` casts at load) and that folder is used.
    """
    spec = unit.model_path
    from needlework.models.gguf import cached_import, is_gguf_spec

    if is_gguf_spec(spec):
        return str(cached_import(spec).resolve())
    if spec.startswith("tiny:"):
        from needlework.models.tiny import build_tiny_checkpoint

        kwargs = tiny_kwargs(spec)
        target = (run_dir / BASE_DIR).resolve()
        build_once(target, lambda out: build_tiny_checkpoint(out, seed=cfg.seed, **kwargs))
        return str(target)
    from needlework.models.gguf import is_local_path

    return str(Path(spec).expanduser().resolve()) if is_local_path(spec) else spec


def build_once(target: Path, build, *, timeout_s: float = 600.0) -> None:
    """Local rank 0 builds into a temp folder and renames it into place; other ranks wait.

    Plain files, no torch.distributed: the process group only exists once the trainer's
    arguments are created, and creating accelerate's state earlier would fix it wrongly on CPU.
    """
    if target.is_dir():
        return
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another node's rank 0 finished first on a shared filesystem
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return
    deadline = time.monotonic() + timeout_s
    while not target.is_dir():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target} was not built by local rank 0 within {timeout_s}s")
        time.sleep(0.2)


def world_size() -> int:
    """Processes in the launch (``accelerate launch``/torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def sft_config(unit, cfg, run_dir: Path, *, max_length: int, fmt: str, num_processes: int):
    """The SFTConfig: our fields, CPU-safe defaults, then ``trl_overrides`` on top."""
    import torch
    from trl import SFTConfig

    from needlework.runtime import bf16_preferred, bf16_supported

    cuda = torch.cuda.is_available()
    # Default bf16 where it pays: bf16 GPUs, and CPUs where a probe measures it faster (some
    # AVX512-BF16 CPUs run a 135M model 2x faster in bf16, others slower); bf16: true forces it
    # wherever it is native, false forces float32.
    bf16 = unit.bf16 if unit.bf16 is not None else bf16_preferred()
    if bf16 and not bf16_supported():
        where = "this GPU" if cuda else "this CPU (no AVX512-BF16 or AMX)"
        raise ConfigError(
            f"bf16 is not supported natively on {where}; set it to false or leave it unset",
            field="trainer.bf16",
        )
    accumulation = unit.gradient_accumulation_steps
    if unit.global_batch_size is not None:
        per_step = unit.per_device_batch_size * num_processes
        if unit.global_batch_size % per_step:
            raise ConfigError(
                f"{unit.global_batch_size} is not a multiple of per_device_batch_"
                f"size x processes = {per_step}",
                field="trainer.global_batch_size",
            )
        accumulation = unit.global_batch_size // per_step
    answer_only = unit.answer_only_loss
    args = dict(
        output_dir=str(run_dir / CHECKPOINTS),
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=unit.epochs,
        max_steps=unit.max_steps,
        learning_rate=unit.learning_rate,
        per_device_train_batch_size=unit.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        lr_scheduler_type=unit.lr_scheduler,
        lr_scheduler_kwargs=dict(unit.lr_scheduler_kwargs),
        warmup_steps=unit.warmup_steps,
        weight_decay=unit.weight_decay,
        # TRL defaults bf16=True and gradient_checkpointing=True; both are wrong on CPU.
        use_cpu=not cuda,
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=(
            unit.gradient_checkpointing if unit.gradient_checkpointing is not None else cuda
        ),
        # Lengths were checked against max_length already; padding-free without packing must
        # get None (TRL does not truncate there and refuses a value).
        max_length=None if unit.padding_free and not unit.packing else max_length,
        packing=unit.packing,
        padding_free=unit.padding_free,
        assistant_only_loss=answer_only and fmt == chat.ASSISTANT_MASK,
        completion_only_loss=answer_only if fmt == chat.PROMPT_COMPLETION else None,
        model_init_kwargs=model_init_kwargs(unit, cuda=cuda, bf16=bf16),
        logging_steps=unit.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=unit.save_steps,
        save_total_limit=unit.save_total_limit,
        report_to="none",
    )
    args.update(trl_overrides(unit))
    try:
        return SFTConfig(**args)
    except (TypeError, ValueError) as exc:  # e.g. an optim name or combination TRL refuses
        raise ConfigError(
            f"refused by trl.SFTConfig ({first_line(exc)})", field="trainer"
        ) from None


@functools.cache
def _sft_fields() -> Any:
    """``trl.SFTConfig``'s fields as a pydantic model, every one optional."""
    import dataclasses
    import typing

    import pydantic
    from trl import SFTConfig

    hints = typing.get_type_hints(SFTConfig)
    fields: Any = {f.name: (hints[f.name], None) for f in dataclasses.fields(SFTConfig) if f.init}
    settings = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model("SFTConfig", __config__=settings, **fields)


def trl_overrides(unit: Any) -> dict[str, Any]:
    """``trl_overrides`` checked against the fields and types ``trl.SFTConfig`` declares (TRL
    does not check: ``adam_beta2: banana`` would fail inside the optimizer)."""
    checked = validate(_sft_fields(), unit.trl_overrides, source="", prefix="trainer.trl_overrides")
    return checked.model_dump(exclude_unset=True)  # type: ignore[no-any-return]


def model_init_kwargs(unit, *, cuda: bool, bf16: bool) -> dict[str, Any]:
    """from_pretrained kwargs; see HfSFT.model_dtype for why full finetuning loads float32."""
    dtype = unit.model_dtype
    if dtype == "auto":
        # A frozen LoRA base can live in bf16 (GPU or bf16-capable CPU); fully trained weights
        # stay float32 under bf16 autocast.
        dtype = "bfloat16" if unit.method != "full" and bf16 else "float32"
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "device_map": None,
        "trust_remote_code": unit.trust_remote_code,
    }
    if unit.model_revision:
        kwargs["revision"] = unit.model_revision
    if unit.attn_implementation:
        kwargs["attn_implementation"] = unit.attn_implementation
    if unit.method == "qlora":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return kwargs


def peft_setup(unit, *, bf16: bool) -> tuple[Any, Any]:
    """(LoraConfig or None, BitsAndBytesConfig or None) for the chosen method."""
    if unit.method == "full":
        return None, None
    from peft import LoraConfig

    lora = LoraConfig(
        r=unit.lora_r,
        lora_alpha=unit.lora_alpha,
        lora_dropout=unit.lora_dropout,
        target_modules=unit.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    if unit.method != "qlora":
        return lora, None
    import torch
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
    )
    return lora, quant


def to_dataset(rows: list[ChatRow], fmt: str):
    """A ``datasets.Dataset`` in the shape TRL expects for the chosen format."""
    from datasets import Dataset

    if fmt == chat.ASSISTANT_MASK:
        return Dataset.from_list([{"messages": list(r.messages)} for r in rows])
    return Dataset.from_list([{"prompt": r.prompt, "completion": r.completion} for r in rows])


def check_prepared(dataset, rows: list[ChatRow], infos: list[chat.SeqInfo], packed: bool) -> None:
    """Every row survived TRL's preparation, with exactly the answer tokens we measured."""
    kept = trained = 0
    for batch in dataset.iter(batch_size=1024):
        kept += sum(len(s) for s in batch["seq_lengths"]) if packed else len(batch["labels"])
        trained += sum(sum(t != -100 for t in labels) for labels in batch["labels"])
    expected = sum(i.trained for i in infos)
    if kept != len(rows) or trained != expected:
        raise RuntimeError(
            f"TRL prepared {kept} of {len(rows)} rows with {trained} answer tokens "
            f"(measured {expected}): rows were truncated or dropped"
        )


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint, checked readable; None when there is none.

    The Trainer writes ``trainer_state.json`` last, so a folder without it is a save that was
    killed midway: it is removed (nothing in it can be resumed) and the one before is used. A
    complete one whose files are damaged stops the run with a one-line error instead of a
    traceback from deep inside the loader (deleting it resumes from the previous one).
    """
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    )
    for _, path in reversed(found):
        if (path / "trainer_state.json").is_file():
            check_checkpoint(path)
            return str(path)
        if is_main_process():
            print(f"needlework train: {path} is an unfinished save; removing it")
            shutil.rmtree(path, ignore_errors=True)
    return None


def check_checkpoint(path: Path) -> None:
    """Every file the Trainer reloads is whole: trainer_state.json parses, each safetensors
    header covers its file, each torch pickle (a zip archive) has its closing directory. Cheap:
    headers and archive directories only, no tensor is read."""
    import json
    import zipfile

    from safetensors import safe_open

    def damage(file: Path) -> str | None:
        try:
            if file.name == "trainer_state.json":
                json.loads(file.read_text(encoding="utf-8"))
            elif file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt"):
                    pass
            elif file.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(file):
                return "truncated or not a torch archive"
        except Exception as exc:  # SafetensorError is not importable by a stable name
            return first_line(exc)
        return None

    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        why = damage(file)
        if why is not None:
            raise UserError(
                f"{path}: damaged checkpoint ({file.relative_to(path)}: {why}); delete this "
                "folder to resume from the previous checkpoint"
            )


@dataclass
class Prepared:
    """A configured SFTTrainer plus what was measured on the way (tests inspect it)."""

    trainer: Any
    model_path: str
    chat_format: str
    max_length: int
    infos: list[chat.SeqInfo]


def prepare(unit, cfg, run_dir: Path, rows: list[ChatRow]) -> Prepared:
    """Tokenizer, template, lengths (fail early), SFTConfig, then the model and the trainer."""
    from transformers import AutoConfig, AutoTokenizer
    from trl import SFTTrainer

    from needlework.training.trainlog import make_callback

    model_path = resolve_model_path(unit, cfg, run_dir)
    if unit.system_prompt is not None:
        turns: list[Any] = [list(r.messages) for r in rows]
        rows = [
            chat_row({"messages": with_system_prompt(t, unit.system_prompt)}, r.source)
            for r, t in zip(rows, turns)
        ]
    rev = {"revision": unit.model_revision} if unit.model_revision else {}
    trust = {"trust_remote_code": unit.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(
        unit.tokenizer_path or model_path, **trust, **({} if unit.tokenizer_path else rev)
    )
    chat.set_chat_template(tokenizer, unit.chat_template_path, field="trainer.chat_template_path")
    fmt = chat.resolve_format(tokenizer, unit.chat_format, field="trainer.chat_format")
    text_config = AutoConfig.from_pretrained(model_path, **trust, **rev).get_text_config()
    infos = chat.measure_all(tokenizer, rows, fmt, progress=is_main_process())
    max_length = chat.check_lengths(
        rows,
        infos,
        unit.max_length,
        field="trainer.max_length",
        model_limit=getattr(text_config, "max_position_embeddings", None),
    )
    args = sft_config(
        unit, cfg, run_dir, max_length=max_length, fmt=fmt, num_processes=world_size()
    )
    lora, quant = peft_setup(unit, bf16=args.bf16)
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        trainer = SFTTrainer(
            model=model_path,
            args=args,
            train_dataset=to_dataset(rows, fmt),
            processing_class=tokenizer,
            peft_config=lora,
            quantization_config=quant,
            callbacks=[make_callback(run_dir), stop_if_complete()],
        )
    except NoMatchingPeftModuleError as exc:  # preflight checks this where it can build the model
        raise ConfigError(first_line(exc), field="trainer.lora_target_modules") from None
    check_prepared(trainer.train_dataset, rows, infos, packed=unit.packing)
    return Prepared(trainer, model_path, fmt, max_length, infos)


def run_sft(unit, cfg, run_dir: Path, rows: list[ChatRow], *, resume: bool) -> dict[str, Any]:
    """Train and save; returns the model.json content."""
    # the checkpoint is chosen and checked before the model loads: a damaged one fails at once
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None and is_main_process():
        print(f"needlework train: no checkpoint under {run_dir / CHECKPOINTS}; starting fresh")
    prep = prepare(unit, cfg, run_dir, rows)
    trainer, args = prep.trainer, prep.trainer.args
    state = trainer.accelerator
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    update_run_info(
        run_dir,
        chat_format=prep.chat_format,
        max_length=prep.max_length,
        lengths=chat.length_stats(prep.infos),
        num_processes=state.num_processes,
        effective_batch_size=(
            args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * state.num_processes
        ),
        trainable_parameters=trainable,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    start = time.time()
    try:
        metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    except CheckpointComplete:
        metrics = finish_complete(trainer, run_dir, start)
    trainer.save_model(str(run_dir / MODEL_DIR))
    state.wait_for_everyone()
    metrics["train_loss"] = whole_run_loss(trainer.state.log_history)
    update_run_info(run_dir, resumed_from=checkpoint, train_metrics=metrics)
    out = model_json(unit, prep.model_path, run_dir)
    if unit.merge_lora and is_main_process():
        merge_adapter(run_dir / MODEL_DIR, run_dir / MERGED_DIR, trust=unit.trust_remote_code)
    state.wait_for_everyone()
    return out


class CheckpointComplete(Exception):
    """The checkpoint resumed from already holds the last step: nothing is left to train."""


def stop_if_complete():
    """A callback that stops ``train()`` before any step when the restored state already reached
    ``max_steps`` (raises :class:`CheckpointComplete`).

    The Trainer resumes in epoch ``global_step // steps_per_epoch`` and checks ``max_steps`` only
    after a step, so resuming from the final checkpoint of a run whose ``max_steps`` is not a
    whole number of epochs would train one step too many. ``on_train_begin`` runs after the
    checkpoint (weights, optimizer, state) is loaded and before the first batch is drawn.
    """
    from transformers import TrainerCallback

    class StopIfComplete(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps > 0:
                raise CheckpointComplete

    return StopIfComplete()


def finish_complete(trainer, run_dir: Path, start: float) -> dict[str, Any]:
    """What the end of ``train()`` records, for a run resumed at its last step: the summary
    log row (no step ran in this process) and the final log files."""
    from transformers.trainer_utils import speed_metrics

    from needlework.training.trainlog import finish_history, write_logs

    metrics = speed_metrics("train", start, num_samples=0, num_steps=0)
    metrics["total_flos"] = trainer.state.total_flos
    metrics["train_loss"] = whole_run_loss(trainer.state.log_history)
    trainer.log(metrics)  # adds epoch to metrics, as the end of train() does
    if trainer.state.is_world_process_zero:
        write_logs(run_dir, finish_history(trainer.state.log_history), plot=True)
    return metrics


def model_json(unit, model_path: str, run_dir: Path) -> dict[str, Any]:
    """docs/formats.md §B: absolute local paths (written as ``./`` inside the run folder by
    the caller); a hub id stays a hub id."""
    model_dir = str((run_dir / MODEL_DIR).resolve())
    from needlework.models.gguf import is_gguf_spec

    if is_gguf_spec(unit.model_path):  # the alias/file, not a cache folder that may be cleared
        model_path = unit.model_path
    if unit.method == "full":
        return {"backend": "hf", "path": model_dir, "adapter": None}
    if unit.merge_lora:
        return {"backend": "hf", "path": str((run_dir / MERGED_DIR).resolve()), "adapter": None}
    pinned = {"revision": unit.model_revision} if unit.model_revision else {}
    return {"backend": "hf", "path": model_path, "adapter": model_dir, **pinned}


def merge_adapter(adapter_dir: Path, out_dir: Path, *, trust: bool = False) -> None:
    """Base + adapter -> plain weights in ``out_dir`` (with the tokenizer), written atomically.

    The base is reloaded in the dtype its checkpoint was saved in (bf16 for Mistral, float32 for
    the tiny models), unquantized even after QLoRA, so the merged model matches the base format.
    """
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    try:
        model = AutoPeftModelForCausalLM.from_pretrained(
            str(adapter_dir), dtype="auto", trust_remote_code=trust
        )
    except OSError as exc:
        raise UserError(f"merge_lora: cannot reload the adapter in {adapter_dir}: {exc}") from None
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.merge_and_unload().save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=trust).save_pretrained(
        str(tmp)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
