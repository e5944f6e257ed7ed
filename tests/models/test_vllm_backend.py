"""The ``vllm`` backend's GPU-free parts, against a fake ``vllm`` module in sys.modules (the real
one cannot be installed on CPU machines; see docs/evaluation.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from needlework.config import validate
from needlework.errors import ConfigError, UserError
from needlework.models import PromptTooLongError, load_backend
from needlework.models.vllm import VLLM

CONVS = [[{"role": "user", "content": "q" * n}] for n in (3, 30, 7, 12, 1)]


@pytest.fixture
def fake_vllm(monkeypatch, tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))

    class LLM:
        instances: list = []

        def __init__(self, **kwargs):
            self.kwargs, self.calls = kwargs, []
            self.llm_engine = SimpleNamespace(
                model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", 4096))
            )
            LLM.instances.append(self)

        def get_tokenizer(self):
            return tok

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            self.calls.append((prompts, params, lora_request, use_tqdm))
            return [
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(text=f"n={len(p['prompt_token_ids'])}", token_ids=[7, 8, 9])
                    ]
                )
                for p in prompts
            ]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, name, int_id, path):
            self.args = (name, int_id, path)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return SimpleNamespace(LLM=LLM, tok=tok)


def test_engine_sampling_and_order(fake_vllm, tiny_checkpoint):
    model = load_backend(
        {"name": "vllm", "path": str(tiny_checkpoint), "chunk_size": 2, "max_model_len": 500}
    )
    outs = model.generate(CONVS, max_new_tokens=7)
    ids = [
        fake_vllm.tok.apply_chat_template(c, add_generation_prompt=True, return_dict=False)
        for c in CONVS
    ]
    assert outs == [f"n={len(x)}" for x in ids]  # order kept, prompts = the chat template's
    from needlework.models.hf import HF

    assert model.encode(CONVS) == HF(path=str(tiny_checkpoint)).encode(CONVS)  # same prompts
    (llm,) = fake_vllm.LLM.instances
    assert llm.kwargs == {
        "model": str(tiny_checkpoint),
        "tensor_parallel_size": 1,
        "dtype": "auto",
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
        "trust_remote_code": False,
        "max_model_len": 500,
    }
    assert [len(c[0]) for c in llm.calls] == [2, 2, 1]
    params = llm.calls[0][1]
    assert params.kwargs == {"n": 1, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 7}
    assert llm.calls[0][2] is None and llm.calls[0][3] is False
    assert model.usage() == {
        "requests": 5,
        "prompt_tokens": sum(map(len, ids)),
        "completion_tokens": 15,
    }


def test_lora_request_and_rank(fake_vllm, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12, "lora_alpha": 24}))
    model = VLLM(path="base", adapter=str(adapter), tensor_parallel_size=2)
    assert model.describe() == f"vllm:base+{tmp_path.name}/adapter"
    model.generate(CONVS[:1], max_new_tokens=3)
    (llm,) = fake_vllm.LLM.instances
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_lora_rank"] == 16
    assert llm.kwargs["tensor_parallel_size"] == 2 and llm.kwargs["max_loras"] == 1
    assert llm.calls[0][2].args == ("adapter", 1, str(adapter.resolve()))
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="integer 'r'"):
        VLLM(path="base", adapter=str(adapter)).engine_kwargs()


def test_too_long_prompts_are_caught_before_the_engine_runs(fake_vllm):
    model = VLLM(path="base", max_model_len=29)  # prompts are 8 + n tokens
    with pytest.raises(PromptTooLongError) as info:
        model.generate(CONVS, max_new_tokens=10)
    assert [i for i, _ in info.value.items] == [1, 3] and info.value.limit == 29
    assert fake_vllm.LLM.instances[0].calls == []
    # without max_model_len the engine's own limit is read
    fake = VLLM(path="base")
    fake.generate(CONVS[:1], max_new_tokens=1)
    assert fake._state["limit"] == 4096


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(UserError, match="vllm package is not installed"):
        VLLM(path="base").generate(CONVS[:1], max_new_tokens=1)


def test_field_validation():
    with pytest.raises(ConfigError, match="'gpu_memory_utilization': expected <= 1"):
        validate(VLLM, {"path": "m", "gpu_memory_utilization": 1.5})
    with pytest.raises(ConfigError, match="'tensor_parallel_size': expected >= 1"):
        validate(VLLM, {"path": "m", "tensor_parallel_size": 0})


def test_importing_backends_loads_no_heavy_library():
    code = (
        "import sys, needlework.models; "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'vllm', 'peft') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
