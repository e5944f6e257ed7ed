"""Token counting with real tokenizers, offline, behind one small interface.

``load_counter(spec)`` accepts:

* ``char`` / ``whitespace`` — trivial counters for unit tests;
* ``hf:<folder or hub id>`` — a Hugging Face tokenizer through ``AutoTokenizer`` (hub ids only
  from the local cache: nothing is downloaded);
* ``tiktoken:<encoding>`` or ``tiktoken:<encoding>@<path/to/file.tiktoken>`` — e.g.
  ``cl100k_base`` (GPT-3.5/4) or ``o200k_base``; without ``@path`` the file is looked up as
  ``$NEEDLEWORK_TIKTOKEN_DIR/<encoding>.tiktoken``, then ``$NEEDLEWORK_DATA/tokenizers/``, then in
  tiktoken's own cache;
* ``mistral:<version>`` — Mistral's SentencePiece models shipped by ``mistral-common``
  (``v1`` = Mistral-7B-Instruct-v0.1 *and* v0.2, 32000 pieces; ``v2``, ``v3``, ``v7``, ``v7m1``
  = the 32768-piece models with ``[INST]`` control tokens, e.g. v3 = Mistral-7B-Instruct-v0.3).

Counts never include BOS/EOS; ``count_chat`` counts what the model really sees (chat template,
BOS and EOS included). Every loader checks the vocabulary it built: some transformers 5
constructors silently build an *empty* vocabulary from a bare SentencePiece file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol, cast, runtime_checkable

from pydantic import AfterValidator

from needlework.errors import ConfigError, UserError, first_line
from needlework.records import Message

SPECS = "char, whitespace, hf:<folder or hub id>, tiktoken:<encoding>[@file], mistral:<v1|v2|v3|v7>"
# A plain ASCII probe every real tokenizer must round-trip (catches empty vocabularies).
PROBE = "Dictionary [12] {3456: 789, 1011: 1213}. The value of key 3456 is 789."


@runtime_checkable
class TokenCounter(Protocol):
    """What generators, budgets and backends need from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model sees it inside a prompt (no BOS/EOS added)."""
        ...

    def count(self, text: str) -> int:
        """``len(encode(text))``, possibly faster."""
        ...

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        """Tokens of the conversation with the model's chat template applied (what it sees)."""
        ...


class CharCounter:
    """One token per character: predictable budgets in unit tests."""

    name = "char"

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def count(self, text: str) -> int:
        return len(text)

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        return sum(len(m["content"]) + 4 for m in messages) + (2 if add_generation_prompt else 0)


class WhitespaceCounter:
    """One token per whitespace-separated word."""

    name = "whitespace"

    def encode(self, text: str) -> list[int]:
        return [hash(w) & 0xFFFF for w in text.split()]

    def count(self, text: str) -> int:
        return len(text.split())

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        return sum(len(m["content"].split()) + 2 for m in messages)


class _Memo:
    """Remembers the counts of the last few texts.

    The pipeline counts a prompt, then the conversation that contains it: with the memo the
    long prompt is encoded once. Keys are the string objects themselves (hash cached by Python).
    """

    def __init__(self, size: int = 4):
        self._size = size
        self._data: dict[str, int] = {}

    def count(self, text: str, measure: Callable[[str], int]) -> int:
        """``measure(text)``, remembered for the last few texts."""
        n = self._data.get(text)
        if n is None:
            n = measure(text)
            if len(self._data) >= self._size:
                self._data.pop(next(iter(self._data)))
            self._data[text] = n
        return n


# --------------------------------------------------------------------------------------------
# Mistral SentencePiece models (mistral-common)
# --------------------------------------------------------------------------------------------

MISTRAL_MODELS = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "v7": "mistral_instruct_tokenizer_241114.model.v7",
    "v7m1": "mistral_instruct_tokenizer_241114.model.v7m1",
}


_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


class _LineCounts:
    """Exact token counts of multi-line text from cached per-line counts (no full encode).

    Valid for a SentencePiece model in which (a) no piece contains a newline — "\\n" is always
    its own byte token, so no merge crosses it and the encoding of ``a\\nb`` is the encoding of
    ``a`` (with the dummy prefix), one newline token, then ``b`` without a prefix — and (b) every
    piece holding an ASCII digit is that single digit, so digits never merge and the count of a
    line does not change when one digit replaces another. Both are checked on the vocabulary
    (true for Mistral v1/v2; v3+ have ``[REFERENCE_DOC_1x]`` pieces, so they encode in full).
    Lines are cached by their digit shape (every digit -> 0): a generated prompt of 85
    dictionary lines is counted from a few hundred cached shapes in microseconds. Tested equal to
    full encodes on generated prompts and random text.
    """

    LIMIT = 200_000  # cached shapes before the caches are reset

    def __init__(self, sp: Any):
        self._sp = sp
        self._first: dict[bytes, int] = {}
        self._rest: dict[bytes, int] = {}
        self._newline = len(sp.encode("\n"))  # dummy prefix + the newline byte

    @staticmethod
    def applies(sp: Any) -> bool:
        digits = set("0123456789")
        for i in range(sp.vocab_size()):
            if sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i):
                continue
            piece = sp.id_to_piece(i)
            if "\n" in piece or (len(piece) > 1 and not digits.isdisjoint(piece)):
                return False
        return True

    def count(self, text: str) -> int:
        # One C pass: UTF-8 bytes with every digit zeroed, split into line shapes.
        head, *lines = text.encode().translate(_ZERO_DIGITS).split(b"\n")
        n = self._first.get(head)
        if n is None:
            n = self._first[head] = len(self._sp.encode(head.decode()))
        rest = self._rest
        for shape in lines:
            c = rest.get(shape)
            if c is None:
                # "\n" + line costs one newline token plus the line's own pieces
                c = len(self._sp.encode("\n" + shape.decode())) - self._newline + 1
                rest[shape] = c
            n += c
        if len(rest) + len(self._first) > self.LIMIT:
            rest.clear()
            self._first.clear()
        return n


class MistralCounter:
    """A Mistral SentencePiece model loaded with ``sentencepiece`` directly.

    ``count_chat`` follows ``mistral-common``'s instruct encoders (tested against them):
    v1 ``<s>[INST] {user} [/INST]{assistant}</s>`` with ``[INST]`` as plain text and a system
    prompt merged into the first user turn; v2/v3 the same with control tokens ``[INST]`` /
    ``[/INST]``, the system prompt merged into the last user turn and assistant text
    right-stripped of spaces; v7 a separate ``[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`` turn.
    """

    def __init__(self, version: str, path: str | Path):
        import sentencepiece as spm

        self.name = f"mistral:{version}"
        self.version = version
        self.path = str(path)
        self._sp = spm.SentencePieceProcessor(model_file=self.path)
        if self._sp.vocab_size() < 1000 or self._sp.decode(self._sp.encode(PROBE)) != PROBE:
            raise UserError(
                f"{self.name}: {self.path} gave a broken vocabulary "
                f"({self._sp.vocab_size()} pieces)"
            )
        self._memo = _Memo()
        self._lines = _LineCounts(self._sp) if _LineCounts.applies(self._sp) else None
        self._control = version != "v1"
        # Whole-word pieces: SentencePiece splits its input at spaces before merging (all shipped
        # Mistral models), so "[INST] X [/INST]" encodes as "[INST]" + X + " [/INST]" whenever X
        # neither starts nor ends with whitespace. Checked against mistral-common in the tests.
        self._inst_open = len(self._sp.encode("[INST]"))
        self._inst_close = len(self._sp.encode("[/INST]"))

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def count(self, text: str) -> int:
        return self._memo.count(text, self._measure)

    def _measure(self, text: str) -> int:
        if self._lines is not None and "\n" in text and not text.startswith("\n"):
            return self._lines.count(text)
        return len(self._sp.encode(text))

    def _user(self, content: str) -> int:
        if self._control:
            return 2 + self.count(content)  # [INST] ... [/INST] control tokens
        if content and not content[0].isspace() and not content[-1].isspace():
            return self._inst_open + self.count(content) + self._inst_close
        return len(self._sp.encode(f"[INST] {content} [/INST]"))

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        msgs = cast("list[dict[str, str]]", [dict(m) for m in messages])  # Message values: str
        systems = [m["content"] for m in msgs if m["role"] == "system"]
        if systems and self.version not in ("v7", "v7m1"):
            msgs = [m for m in msgs if m["role"] != "system"]
            users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
            if not users:
                raise UserError(f"{self.name}: a system message needs a user message to merge into")
            target = users[0] if self.version == "v1" else users[-1]
            msgs[target]["content"] = "\n\n".join(systems) + "\n\n" + msgs[target]["content"]
        total = 1  # BOS
        for m in msgs:
            if m["role"] == "user":
                total += self._user(m["content"])
            elif m["role"] == "assistant":
                text = m["content"] if self.version == "v1" else m["content"].rstrip(" ")
                total += self.count(text) + 1  # EOS
            else:  # v7 system turn
                total += 2 + self.count(m["content"])
        return total


# --------------------------------------------------------------------------------------------
# tiktoken
# --------------------------------------------------------------------------------------------

_TIKTOKEN_LOCK = threading.Lock()


def _tiktoken_file(name: str, url: str, explicit: str | None) -> Path:
    """Where the ``.tiktoken`` file for ``name`` lives; never downloads."""
    tried = []
    if explicit:
        candidates = [Path(explicit).expanduser()]
    else:
        from needlework.runtime import settings

        env = settings()  # its data folder's tokenizers/ (the data/ layout)
        folders = [
            env.NEEDLEWORK_TIKTOKEN_DIR,
            env.NEEDLEWORK_DATA and env.NEEDLEWORK_DATA / "tokenizers",
        ]
        candidates = [f / f"{name}.tiktoken" for f in folders if f is not None]
        import tempfile

        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        cache = cache or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        candidates.append(Path(cache) / hashlib.sha1(url.encode()).hexdigest())
    for c in candidates:
        if c.is_file():
            return c
        tried.append(str(c))
    raise UserError(
        f"tiktoken:{name}: no local .tiktoken file (looked at {', '.join(tried)}); "
        f"pass tiktoken:{name}@/path/to/{name}.tiktoken or set "
        "NEEDLEWORK_TIKTOKEN_DIR or NEEDLEWORK_DATA (nothing is downloaded)"
    )


def _read_tiktoken_ranks(path: Path, expected_sha256: str | None, name: str) -> dict[bytes, int]:
    data = path.read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise UserError(f"tiktoken:{name}: {path} is not the {name} file (sha256 mismatch)")
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if line:
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError:
                raise UserError(f"{path}:{lineno}: not a .tiktoken line") from None
    return ranks


class TiktokenCounter:
    """An OpenAI encoding from a local ``.tiktoken`` file, with tiktoken's own regex/specials.

    ``count_chat`` uses OpenAI's published counting convention for chat models: every message
    costs 3 tokens plus its role and content, and a reply to be generated is primed with 3 more
    (``add_generation_prompt=True``). The fine-tuning API's own count may differ by a few tokens.
    """

    def __init__(self, encoding: str, path: str | None = None):
        import tiktoken
        import tiktoken_ext.openai_public as public

        self.name = f"tiktoken:{encoding}"
        ctor = getattr(public, encoding, None)
        if not callable(ctor) or encoding.startswith("_") or encoding == "gpt2":
            raise ConfigError(
                f"unknown tiktoken encoding '{encoding}' (expected one of "
                "cl100k_base, o200k_base, p50k_base, r50k_base)",
                field="tokenizer",
            )
        found: dict[str, Any] = {}

        def local_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
            found["path"] = _tiktoken_file(encoding, url, path)
            return _read_tiktoken_ranks(found["path"], expected_hash, encoding)

        # The constructors in tiktoken_ext hold the exact regex and special tokens but fetch the
        # ranks by URL; hand them the local file instead (never the network).
        with _TIKTOKEN_LOCK:
            original = public.load_tiktoken_bpe
            public.load_tiktoken_bpe = local_ranks
            try:
                kwargs = ctor()
            finally:
                public.load_tiktoken_bpe = original
        self.path = str(found.get("path"))
        self._enc = tiktoken.Encoding(**kwargs)
        self._memo = _Memo()

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def count(self, text: str) -> int:
        return self._memo.count(text, lambda t: len(self._enc.encode_ordinary(t)))

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        total = sum(3 + self.count(m["role"]) + self.count(m["content"]) for m in messages)
        return total + (3 if add_generation_prompt else 0)


# --------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------


class HFCounter:
    """A Hugging Face tokenizer (``AutoTokenizer``); ``count_chat`` applies its chat template."""

    def __init__(self, path: str):
        from needlework.models.base import need
        from needlework.models.gguf import cached_import, is_gguf_spec

        self.name = f"hf:{path}"
        auto = need("transformers", self.name, "pip install 'needlework[train]'").AutoTokenizer

        if is_gguf_spec(path):  # a .gguf file or bundled alias: its imported folder
            path = str(cached_import(path))
        try:
            # local_files_only: a hub id works when it is in the local cache; nothing downloads
            self._tok = auto.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"{self.name}: cannot load the tokenizer offline ({first_line(exc)})"
            ) from None
        ids = self.encode(PROBE)
        # cast: decode() of one id list returns str (the stubs also allow list[str])
        if not ids or cast(str, self._tok.decode(ids)).strip() != PROBE:
            raise UserError(
                f"{self.name}: the tokenizer does not round-trip plain text "
                f"(vocabulary of {len(self._tok)}; an empty vocabulary built from a "
                "bare SentencePiece file?)"
            )
        self._memo = _Memo()

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def count(self, text: str) -> int:
        return self._memo.count(text, lambda t: len(self.encode(t)))

    def count_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> int:
        if not getattr(self._tok, "chat_template", None):
            raise UserError(f"{self.name}: the tokenizer has no chat template to count with")
        ids = self._tok.apply_chat_template(
            cast("list[dict[str, str]]", [dict(m) for m in messages]),  # Message values: str
            tokenize=True,
            return_dict=False,
            add_generation_prompt=add_generation_prompt,
        )
        return len(ids)


# --------------------------------------------------------------------------------------------


def _mistral_data_dir() -> Path:
    """mistral-common's data folder, found without importing the package (pydantic, numpy);
    a path that does not exist when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        return Path("mistral_common (not installed)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def check_spec(spec: str) -> str:
    """The checks of ``spec`` that need no tokenizer loaded (for configs and ``--dry-run``): a
    known kind, a known Mistral version, an existing local ``hf:`` folder; a ValueError saying
    what is wrong (:data:`TokenizerSpec` puts it on a config field)."""
    from needlework.models.gguf import is_gguf_spec, is_local_path

    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    if spec in ("char", "whitespace"):
        return spec
    if kind not in ("hf", "tiktoken", "mistral") or not arg:
        problem = f"unknown tokenizer '{spec}' (expected {SPECS})"
    elif kind == "mistral" and arg not in MISTRAL_MODELS:
        problem = f"unknown Mistral tokenizer '{arg}' (expected one of {', '.join(MISTRAL_MODELS)})"
    elif kind == "hf" and not is_gguf_spec(arg) and is_local_path(arg):
        if Path(arg).expanduser().is_dir():
            return spec
        problem = f"hf:{arg}: no tokenizer folder at {arg}"
    else:
        return spec
    raise ValueError(problem)


TokenizerSpec = Annotated[str, AfterValidator(check_spec)]
"""A config field naming a token counter (see the module docstring), checked as it loads."""


@functools.lru_cache(maxsize=16)
def load_counter(spec: str) -> TokenCounter:
    """Build the token counter named by ``spec`` (see the module docstring); cached per spec."""
    try:
        spec = check_spec(spec)
    except ValueError as exc:
        raise ConfigError(str(exc), field="tokenizer") from None
    if spec == "char":
        return CharCounter()
    if spec == "whitespace":
        return WhitespaceCounter()
    kind, _, arg = spec.partition(":")
    if kind == "mistral":
        path = _mistral_data_dir() / MISTRAL_MODELS[arg]
        if not path.is_file():
            raise UserError(f"mistral:{arg}: {path} is missing (pip install mistral-common)")
        return MistralCounter(arg, path)
    if kind == "tiktoken":
        name, _, file = arg.partition("@")
        return TiktokenCounter(name, file or None)
    return HFCounter(arg)


def largest_fitting(fits: Callable[[int], bool], hint: int = 0) -> int:
    """The largest ``n >= 0`` with ``fits(n)``, for ``fits`` true up to a point and false after.

    Galloping search from ``hint`` then bisection, so a good hint costs two calls and a bad one
    ``O(log n)``. Raises ValueError if even ``n = 0`` does not fit.
    """
    if not fits(0):
        raise ValueError("nothing fits, not even n = 0")
    hint, step = max(0, hint), 1
    if fits(hint):
        lo = hint
        while fits(lo + step):
            lo, step = lo + step, step * 2
        hi = lo + step
    else:
        hi = hint
        while not fits(max(0, hi - step)):
            hi, step = max(0, hi - step), step * 2
        lo = max(0, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
