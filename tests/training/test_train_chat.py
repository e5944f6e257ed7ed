"""Mistral's [INST] template (no generation markers) with the real Mistral v1 vocabulary.

The tokenizer is rebuilt offline from the SentencePiece model that ``mistral-common`` ships (the
Mistral-7B-Instruct-v0.1 vocabulary), so the prompt/answer boundary is tested with the real
SentencePiece pieces; the model is a tiny random Mistral. Two revisions of the template are used
(the spacing around ``[/INST]`` and the answer differs), because the point of the
``prompt_completion`` route is that it follows whichever template the checkpoint ships.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("sentencepiece")
pytest.importorskip("mistral_common")

from needlework.errors import ConfigError  # noqa: E402
from needlework.training import chat  # noqa: E402
from needlework.training.data import read_chat_rows  # noqa: E402
from needlework.training.sft_run import prepare  # noqa: E402

from .helpers import kv_rows, labelled_spans, train_config, write_rows  # noqa: E402

# Chat templates of the [INST] family, written for this test (format facts, not copies).
INST_V1 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
INST_SPACED = (
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- endif %}{%- endfor %}"
)


@pytest.fixture(scope="module")
def mistral_tokenizer():
    import mistral_common
    import sentencepiece as spm
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    model_file = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tok = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab), legacy=False)
    sample = "The value of key 365 is 7634 and it is in Dictionary [32]."
    assert tok(sample, add_special_tokens=False)["input_ids"] == sp.encode(sample)
    return tok


@pytest.fixture(scope="module", params=[INST_V1, INST_SPACED], ids=["v0.1", "spaced"])
def mistral_checkpoint(request, mistral_tokenizer, tmp_path_factory):
    from needlework.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("mistral")
    mistral_tokenizer.chat_template = request.param
    build_tiny_model(
        mistral_tokenizer,
        out,
        arch="mistral",
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
    )
    return out


def test_inst_template_trains_exactly_the_answer_and_eos(tmp_path, mistral_checkpoint):
    from transformers import AutoTokenizer

    rows = kv_rows(8)
    path = write_rows(tmp_path / "t.jsonl", rows)
    cfg = train_config(tmp_path / "run", path, model_path=str(mistral_checkpoint))
    prep = prepare(cfg.trainer, cfg, tmp_path / "run", read_chat_rows(path))
    assert prep.chat_format == chat.PROMPT_COMPLETION  # no generation markers in [INST]
    # What an evaluator feeds the trained model: the saved tokenizer's template, generation prompt.
    tok = AutoTokenizer.from_pretrained(mistral_checkpoint)
    prompts = {
        tuple(chat.encode(tok, r["messages"][:1], add_generation_prompt=True)["input_ids"]): r[
            "messages"
        ][1]["content"]
        for r in rows
    }
    batch = next(iter(prep.trainer.get_train_dataloader()))
    for ids, trained in labelled_spans(batch):
        assert trained == list(range(trained[0], trained[-1] + 1))
        assert tuple(ids[: trained[0]]) in prompts, "train prompt == inference prompt tokens"
        answer = prompts[tuple(ids[: trained[0]])]
        assert ids[trained[-1]] == tok.eos_token_id  # the model learns to stop
        assert tok.decode([ids[i] for i in trained[:-1]]).strip() == answer
    assert sum(i.prompt_is_prefix for i in prep.infos) == len(rows)


def test_assistant_mask_needs_generation_markers(tmp_path, mistral_checkpoint):
    path = write_rows(tmp_path / "t.jsonl", kv_rows(2))
    cfg = train_config(
        tmp_path / "run", path, model_path=str(mistral_checkpoint), chat_format="assistant_mask"
    )
    with pytest.raises(ConfigError, match="generation %} markers"):
        prepare(cfg.trainer, cfg, tmp_path / "run", read_chat_rows(path))


def test_generation_marker_detection():
    from needlework.models.tiny import CHAT_TEMPLATE

    assert chat.has_generation_markers(CHAT_TEMPLATE)
    assert not chat.has_generation_markers(INST_V1)
    assert not chat.has_generation_markers(None)
