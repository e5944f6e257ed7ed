"""Tiny local tokenizers and models of real architectures, built in-process (nothing downloaded).

Used by the tests, the demo and the CPU recipes: they exercise the same ``from_pretrained(dir)``
paths as a real checkpoint. Recipes follow ``shared/spec/stack-notes.md`` §2.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

SPECIALS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML with {% generation %} markers around the assistant turn *including* <|im_end|>, so TRL's
# assistant-only loss trains the model to stop (stack-notes §2).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{%- generation %}"
    "{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def build_char_tokenizer(out_dir: str | Path | None = None):
    """One token per printable character, role names as single tokens; vocab ~108."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[1:3],
        padding_side="left",
    )
    fast.add_tokens(["user", "assistant", "system"])
    fast.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def tiny_config(
    tokenizer,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 8192,
    arch: str = "llama",
):
    """The model config alone (no weights), so a spec can be checked before anything is built
    (sizes as ``training.sft_run.tiny_kwargs`` checks them)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )


def build_tiny_model(tokenizer, out_dir: str | Path | None = None, *, seed: int = 0, **sizes: Any):
    """A randomly initialised Llama/Mistral/Qwen2 causal LM sized for CPU tests (~0.1-0.6M);
    ``sizes`` are :func:`tiny_config`'s keyword arguments."""
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(tokenizer, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return model


def build_tiny_checkpoint(out_dir: str | Path, **model_kwargs) -> Path:
    """Tokenizer + model saved together in ``out_dir``, loadable with ``from_pretrained``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer(out)
    build_tiny_model(tok, out, **model_kwargs)
    return out
