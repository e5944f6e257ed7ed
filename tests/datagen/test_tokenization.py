"""Token counts equal the reference libraries' (mistral-common, tiktoken, transformers)."""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest
from tests.conftest import shared_file

from needlework.datagen.multi_subkey_dict_kv import MultiSubkeyDictKV
from needlework.datagen.simple_dict_kv import SimpleDictKV
from needlework.errors import ConfigError, UserError
from needlework.tokenization import (
    CharCounter,
    TokenCounter,
    WhitespaceCounter,
    load_counter,
)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
TEXTS = [
    "Hello 123 world.",
    " leading space",
    "trailing space ",
    "line\nbreaks\n\nand  double  spaces",
    "\nstarts with a newline",
    "ends with a newline\n",
    "unicode: café — ✓ 数字 ☺",
    "<|endoftext|> [INST] [/INST] </s> <s>",
    "",
]


def _prompts(n: int = 6) -> list[tuple[str, str]]:
    simple, multi = SimpleDictKV(), MultiSubkeyDictKV()
    out = []
    for i in range(n):
        gen = simple if i % 2 == 0 else multi
        t = gen.build(random.Random(i), 12, i % 12)
        out.append((t.prompt, t.answer))
    return out


def _mistral_reference(version: str):
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return getattr(MistralTokenizer, version)()


def _reference_chat_len(ref, messages) -> int:
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    cls = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    req = ChatCompletionRequest(messages=[cls[m["role"]](content=m["content"]) for m in messages])
    instruct = ref._instruct_request_normalizer.from_chat_completion_request(req)
    return len(ref.instruct_tokenizer.encode_instruct(instruct).tokens)


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_mistral_counts_equal_mistral_common(version):
    counter = load_counter(f"mistral:{version}")
    ref = _mistral_reference(version).instruct_tokenizer.tokenizer
    for text in TEXTS + [p for pair in _prompts() for p in pair]:
        assert counter.encode(text) == ref.encode(text, bos=False, eos=False), text[:40]
        assert counter.count(text) == len(ref.encode(text, bos=False, eos=False))


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v7"])
def test_mistral_chat_counts_equal_mistral_common(version):
    counter = load_counter(f"mistral:{version}")
    ref = _mistral_reference(version)
    convs = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in _prompts()
    ]
    convs += [
        [{"role": "user", "content": " padded user "}, {"role": "assistant", "content": " ok "}],
        [{"role": "user", "content": "line one\n"}, {"role": "assistant", "content": "A."}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi 12."},
            {"role": "assistant", "content": "Yo."},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "Sure 3."},
        ],
    ]
    for conv in convs:
        assert counter.count_chat(conv) == _reference_chat_len(ref, conv), conv[0]["content"][:40]


def test_mistral_v1_is_the_32000_piece_model_with_text_inst():
    counter = load_counter("mistral:v1")
    assert counter._sp.vocab_size() == 32000
    # [INST] is plain text in v1 (3 pieces), a control token from v2 on
    assert counter._inst_open == 3 and load_counter("mistral:v3")._sp.vocab_size() == 32768


def test_unknown_mistral_version_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown Mistral tokenizer 'v9'"):
        load_counter("mistral:v9")


@pytest.fixture
def cl100k_file():
    return shared_file("tokenizers", "cl100k_base.tiktoken")


@pytest.fixture
def tiktoken_reference(cl100k_file, tmp_path, monkeypatch):
    """tiktoken's own get_encoding, fed the same file through its cache (no download)."""
    import tiktoken

    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    shutil.copy(cl100k_file, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return tiktoken.get_encoding("cl100k_base")


def test_tiktoken_counts_equal_tiktoken(cl100k_file, tiktoken_reference):
    counter = load_counter(f"tiktoken:cl100k_base@{cl100k_file}")
    assert counter.name == "tiktoken:cl100k_base"
    for text in TEXTS + [p for pair in _prompts() for p in pair]:
        assert counter.encode(text) == tiktoken_reference.encode_ordinary(text), text[:40]
    # the special-token regex and ids are tiktoken's own
    assert counter._enc.encode("<|endoftext|>", allowed_special="all") == [100257]
    assert counter._enc._pat_str == tiktoken_reference._pat_str


def test_tiktoken_chat_count_follows_openai_convention(cl100k_file, tiktoken_reference):
    counter = load_counter(f"tiktoken:cl100k_base@{cl100k_file}")
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi 12."},
        {"role": "assistant", "content": "Yo."},
    ]
    expected = sum(
        3 + len(tiktoken_reference.encode(m["role"])) + len(tiktoken_reference.encode(m["content"]))
        for m in msgs
    )
    assert counter.count_chat(msgs) == expected
    assert counter.count_chat(msgs[:2], add_generation_prompt=True) == (
        expected - 3 - 1 - len(tiktoken_reference.encode("Yo.")) + 3
    )


def test_tiktoken_file_from_env_dir(cl100k_file, tmp_path, monkeypatch):
    shutil.copy(cl100k_file, tmp_path / "cl100k_base.tiktoken")
    monkeypatch.setenv("NEEDLEWORK_TIKTOKEN_DIR", str(tmp_path))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    load_counter.cache_clear()
    try:
        assert load_counter("tiktoken:cl100k_base").count("Hello world") == 2
    finally:
        load_counter.cache_clear()


def test_tiktoken_missing_or_wrong_file_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLEWORK_TIKTOKEN_DIR", str(tmp_path))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    load_counter.cache_clear()
    try:
        with pytest.raises(UserError, match="no local .tiktoken file"):
            load_counter("tiktoken:o200k_base")
        (tmp_path / "o200k_base.tiktoken").write_text("YQ== 0\n")
        with pytest.raises(UserError, match="sha256 mismatch"):
            load_counter("tiktoken:o200k_base")
        with pytest.raises(ConfigError, match="unknown tiktoken encoding"):
            load_counter("tiktoken:nope_base")
    finally:
        load_counter.cache_clear()


@pytest.mark.parametrize("spec", ["", "foo", "hf:", "bpe:x", "mistral"])
def test_unknown_spec_is_a_one_line_config_error(spec):
    with pytest.raises(ConfigError) as info:
        load_counter(spec)
    assert "\n" not in str(info.value)


def test_trivial_counters():
    assert isinstance(CharCounter(), TokenCounter) and load_counter("char").count("abc") == 3
    assert WhitespaceCounter().count("a b  c\nd") == 4
    assert load_counter("whitespace").name == "whitespace"


@pytest.fixture(scope="module")
def char_tokenizer_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from needlework.models.tiny import build_char_tokenizer

    path = tmp_path_factory.mktemp("hf_tok")
    build_char_tokenizer(path)
    return path


def test_hf_counts_equal_transformers(char_tokenizer_dir):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(char_tokenizer_dir))
    counter = load_counter(f"hf:{char_tokenizer_dir}")
    prompt, answer = _prompts(1)[0]
    assert counter.count(prompt) == len(ref.encode(prompt, add_special_tokens=False))
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    assert counter.count_chat(msgs) == len(
        ref.apply_chat_template(msgs, tokenize=True, return_dict=False)
    )


def test_hf_empty_vocabulary_is_caught(tmp_path, monkeypatch):
    """transformers 5 builds a 3-token vocabulary from a bare SentencePiece file, silently."""
    transformers = pytest.importorskip("transformers")
    from needlework.tokenization import HFCounter, _mistral_data_dir

    model = tmp_path / "tokenizer.model"
    shutil.copy(_mistral_data_dir() / "tokenizer.model.v1", model)
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda path, **kw: transformers.LlamaTokenizer(vocab_file=str(model)),
    )
    with pytest.raises(UserError, match="does not round-trip"):
        HFCounter(str(tmp_path))


def test_hf_missing_folder_is_a_user_error(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(UserError, match="no tokenizer folder at"):
        load_counter(f"hf:{tmp_path / 'missing'}")


def test_line_shape_counts_equal_full_encodes():
    """The cached per-line count path (Mistral v1/v2) is exact, not an estimate."""
    import string

    counter = load_counter("mistral:v1")
    assert counter._lines is not None and load_counter("mistral:v3")._lines is None
    sp = counter._sp
    gens = [
        SimpleDictKV(),
        SimpleDictKV(answer_template=False, key_digits=(1, 6), value_digits=(1, 9)),
        MultiSubkeyDictKV(),
        MultiSubkeyDictKV(answer_template=False, subkey_digits=(1, 5)),
    ]
    for i in range(400):
        n = random.Random(i).randrange(2, 90)
        t = gens[i % 4].build(random.Random(i), n, i % n)
        for text in (t.prompt, t.prompt + "\n", t.prompt.replace("\n", "\n\n")):
            assert counter._lines.count(text) == len(sp.encode(text))
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + "  \n\n\t.,:{}[]()_-▁☺é数"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        if not text.startswith("\n"):
            assert counter._lines.count(text) == len(sp.encode(text)), repr(text)
        assert counter.count(text) == len(sp.encode(text)), repr(text)
