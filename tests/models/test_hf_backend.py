"""The ``hf`` backend on tiny local models: batching never changes the tokens, prompts are never
truncated, adapters load, errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from needlework.config import validate  # noqa: E402
from needlework.errors import ConfigError, UserError  # noqa: E402
from needlework.models import PromptTooLongError, load_backend  # noqa: E402
from needlework.models.hf import HF  # noqa: E402

PROMPTS = [
    "hi",
    "What is the value of key 42 in the dictionary below?",
    "a b c d e f g h",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "0123456789",
    "Tell me a story about a needle in a haystack, please.",
    "x",
]
CONVS = [[{"role": "user", "content": p}] for p in PROMPTS]


@pytest.fixture(scope="module")
def varied_checkpoint(tmp_path_factory) -> Path:
    """The tiny model with large random weights, so outputs depend on the prompt (the default
    small init answers the same character to everything, which would make equality tests
    meaningless)."""
    import torch

    from needlework.models.tiny import build_char_tokenizer, build_tiny_model

    out = tmp_path_factory.mktemp("varied") / "model"
    tok = build_char_tokenizer()
    model = build_tiny_model(tok)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3, generator=gen)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def varied_reference(varied_checkpoint) -> list[str]:
    return reference(varied_checkpoint, CONVS, 10)


def reference(path: Path, convs, max_new_tokens: int) -> list[str]:
    """One prompt at a time, unpadded, straight through transformers (the textbook way)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    outs = []
    for conv in convs:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_dict=False)
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, len(ids) :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        outs.append(tok.decode(new, skip_special_tokens=True))
    return outs


@pytest.mark.parametrize("fast_prefill", [True, False], ids=["per-prompt-prefill", "left-padded"])
def test_batched_generation_equals_one_at_a_time(varied_checkpoint, varied_reference, fast_prefill):
    ref = varied_reference
    assert len(set(ref)) > 3, "outputs should depend on the prompt"
    model = HF(path=str(varied_checkpoint), batch_size=3, fast_prefill=fast_prefill)
    assert model.generate(CONVS, max_new_tokens=10) == ref
    assert model._state["fast"] is fast_prefill
    # reversed input -> reversed output: order is restored after length sorting
    assert model.generate(CONVS[::-1], max_new_tokens=10) == ref[::-1]
    usage = model.usage()
    assert usage["requests"] == 2 * len(CONVS) and usage["batches"] == 2 * 3
    assert 0 < usage["completion_tokens"] <= 2 * 10 * len(CONVS)


def test_equality_check_is_sensitive_to_broken_padding(varied_checkpoint, varied_reference):
    """Attending to the pads (mask of ones) changes the tokens: the test above can fail."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(varied_checkpoint))
    model = AutoModelForCausalLM.from_pretrained(str(varied_checkpoint)).eval()
    ids = [tok.apply_chat_template(c, add_generation_prompt=True, return_dict=False) for c in CONVS]
    width = max(map(len, ids))
    batch = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
    with torch.inference_mode():
        out = model.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    broken = [tok.decode(r, skip_special_tokens=True) for r in out[:, width:].tolist()]
    assert sum(b != r for b, r in zip(broken, varied_reference)) >= 2


def test_prompt_too_long_is_an_error_not_a_truncation(tiny_checkpoint):
    model = HF(path=str(tiny_checkpoint), max_context_tokens=60)
    short = [{"role": "user", "content": "ok"}]
    long = [{"role": "user", "content": "y" * 100}]
    with pytest.raises(PromptTooLongError) as info:
        model.generate([short, long, short, long], max_new_tokens=8)
    err = info.value
    assert [i for i, _ in err.items] == [1, 3] and err.limit == 60
    msg = str(err)
    assert "\n" not in msg and "prompt #1 has" in msg and "60-token context" in msg
    assert "(and 1 more)" in msg and "never truncated" in msg
    assert model.usage()["requests"] == 0  # nothing generated before the check
    # prompt + max_new_tokens is what must fit
    n = err.items[0][1]
    assert n is not None and n > 60
    fits = HF(path=str(tiny_checkpoint), max_context_tokens=n + 4)
    with pytest.raises(PromptTooLongError):
        fits.generate([long], max_new_tokens=5)
    assert len(fits.generate([long], max_new_tokens=4)) == 1


def test_default_context_is_the_models(tiny_checkpoint):
    model = HF(path=str(tiny_checkpoint))
    model.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=2)
    assert model._state["limit"] == 8192  # max_position_embeddings of the tiny config


def test_lora_adapter_is_applied(varied_checkpoint, tmp_path):
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(varied_checkpoint))
    torch.manual_seed(0)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(20)  # a visible change
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    merged_dir = tmp_path / "merged"
    peft_model.merge_and_unload().save_pretrained(str(merged_dir))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(varied_checkpoint)).save_pretrained(str(merged_dir))

    with_adapter = load_backend(
        {"backend": "hf", "path": str(varied_checkpoint), "adapter": str(tmp_path / "adapter")}
    )
    # generic folder names ("model", "adapter") keep their parent for a readable id
    assert with_adapter.describe() == (
        f"hf:{varied_checkpoint.parent.name}/model+{tmp_path.name}/adapter"
    )
    outs = with_adapter.generate(CONVS, max_new_tokens=8)
    assert outs == reference(merged_dir, CONVS, 8)
    assert outs != reference(varied_checkpoint, CONVS, 8)


def test_load_errors_are_one_line(tmp_path, tiny_checkpoint):
    with pytest.raises(UserError, match="model folder not found"):
        HF(path=str(tmp_path / "nope")).generate(
            [[{"role": "user", "content": "x"}]], max_new_tokens=1
        )
    with pytest.raises(UserError, match="adapter .*: Can't find 'adapter_config.json'"):
        HF(path=str(tiny_checkpoint), adapter=str(tmp_path)).generate(
            [[{"role": "user", "content": "x"}]], max_new_tokens=1
        )
    with pytest.raises(
        UserError, match=r"conversation #1: field 'messages': expected at least 1 item"
    ):
        HF(path=str(tiny_checkpoint)).generate(
            [[{"role": "user", "content": "x"}], []], max_new_tokens=1
        )
    with pytest.raises(
        UserError, match=r"conversation #0: field 'messages\.0\.content': is required"
    ):
        HF(path=str(tiny_checkpoint)).generate([[{"role": "user"}]], max_new_tokens=1)


def test_missing_chat_template_is_an_error(tmp_path, tiny_checkpoint):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_checkpoint, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    import json

    cfg_path = bare / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="has no chat template"):
        HF(path=str(bare)).generate([[{"role": "user", "content": "x"}]], max_new_tokens=1)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"path": ""}, "'path': expected a non-empty string"),
        ({"path": "m", "dtype": "fp8"}, "'dtype': expected one of 'auto', 'fastest'.*'fp8'"),
        ({"path": "m", "batch_size": 0}, "'batch_size': expected >= 1"),
        ({"path": "m", "max_context_tokens": 0}, "'max_context_tokens': expected >="),
        ({"path": "m", "device": "banana"}, "'device': .*cuda.*'banana'"),
    ],
)
def test_field_validation(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(HF, kwargs)


@pytest.mark.parametrize("max_new_tokens", [1, 2, 40])
def test_lean_decode_loop_equals_one_at_a_time(varied_checkpoint, max_new_tokens):
    """The custom batched greedy loop (hf_decode) gives the tokens of one-at-a-time generate,
    including one-token answers (first token from the prefill alone) and long answers; and it
    agrees with the left-padded ``generate`` fallback (e.g. flash-attention models)."""
    ref = reference(varied_checkpoint, CONVS, max_new_tokens)
    model = HF(path=str(varied_checkpoint), batch_size=4)
    assert model.generate(CONVS, max_new_tokens=max_new_tokens) == ref
    assert model._state["fast"] is True
    model._state["fast"] = False  # the generate() fallback
    assert model.generate(CONVS, max_new_tokens=max_new_tokens) == ref


def test_lean_loop_refuses_logits_processors():
    from types import SimpleNamespace

    from needlework.models.hf_decode import lean_ok

    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))
    plain = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}
    assert lean_ok(model, SimpleNamespace(**plain))
    assert not lean_ok(model, SimpleNamespace(**plain, no_repeat_ngram_size=3))
    assert not lean_ok(model, SimpleNamespace(**plain, min_new_tokens=5))
    assert not lean_ok(model, SimpleNamespace(**{**plain, "repetition_penalty": 1.2}))
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert not lean_ok(flash, SimpleNamespace(**plain))


def test_provenance_names_the_weights_loaded(tiny_checkpoint, tmp_path, monkeypatch):
    """run.json's model_provenance: a local folder is identified by its weight bytes."""
    import shutil

    monkeypatch.setenv("NEEDLEWORK_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    first = load_backend({"name": "hf", "path": str(tiny_checkpoint)}).provenance()
    assert first["revision"] is None and len(first["weights_sha256"]) == 64
    assert load_backend({"name": "hf", "path": str(copy)}).provenance() == {
        **first,
        "path": str(copy),
    }  # same bytes, same hash, wherever the folder is
    assert (tmp_path / "cache" / "weight_hashes.json").is_file()  # hashed once per file
    (weights,) = copy.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = load_backend({"name": "hf", "path": str(copy)}).provenance()
    assert changed["weights_sha256"] != first["weights_sha256"]


def test_bad_devices_and_folders_without_a_model_are_one_line(tmp_path, tiny_checkpoint):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="torch sees no CUDA GPU"):
            HF(path=str(tiny_checkpoint), device="cuda").generate(CONVS[:1], max_new_tokens=2)
    run = tmp_path / "run"  # a training run folder given as hf:<folder>: no weights in it
    run.mkdir()
    (run / "model.json").write_text('{"backend": "hf", "path": "./model"}')
    with pytest.raises(UserError) as info:
        HF(path=str(run)).generate(CONVS[:1], max_new_tokens=2)
    text = str(info.value)
    assert "cannot load model" in text and "pass it without hf:" in text and "\n" not in text


def remote_code_checkpoint(tiny_checkpoint: Path, folder: Path) -> Path:
    """A copy whose config.json names its own model classes (``auto_map``) for a model type
    transformers does not know: loading it needs ``trust_remote_code``."""
    import json
    import shutil

    shutil.copytree(tiny_checkpoint, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(
        model_type="needlework_custom",
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomModel",
        },
    )
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_a_checkpoint_with_its_own_code_is_named_and_nothing_asks(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """transformers asks ``[y/N]`` on stdin when trust_remote_code is left unset; it is always
    passed, so loading never waits, and the error names the flag to set."""
    import builtins

    custom = remote_code_checkpoint(tiny_checkpoint, tmp_path / "custom")
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("asked on stdin"))
    with pytest.raises(UserError) as info:
        HF(path=str(custom)).generate(CONVS[:1], max_new_tokens=1)
    text = str(info.value)
    assert text.startswith(f"hf: cannot load model '{custom}': the checkpoint ships its own")
    assert "set trust_remote_code: true" in text and "\n" not in text
