"""Inference backends shared by evaluation and anything else that needs a model.

Importing this package registers every backend module in it; heavy libraries load inside each
backend on first use.

``load_backend(spec)`` accepts:

* a short form ``<backend>:<value>`` for backends that declare one (``short_form`` and
  ``from_short``): ``hf:PATH``, ``vllm:PATH``, ``openai:MODEL[@BASE_URL]``, ``scripted:MODE``;
* a training run folder (or its ``model.json``) written by ``needlework train``;
* a mapping ``{"name": "hf", "path": ...}`` or, as in ``model.json``,
  ``{"backend": "hf", "path": ..., "adapter": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from needlework.errors import ConfigError, first_line
from needlework.models.base import ChatModel, PromptTooLongError
from needlework.registry import discover

discover(__name__, __path__)

__all__ = ["ChatModel", "PromptTooLongError", "load_backend", "parse_model_spec"]


def short_forms() -> str:
    """``hf:PATH, ...``: the short forms the backends declare (``short_form``/``from_short``)."""
    from needlework.registry import backends

    return ", ".join(
        f"{name}:{cls.short_form}" for name, cls in backends.items() if hasattr(cls, "from_short")
    )


def parse_model_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """A model spec (short form, run folder, model.json or mapping) -> ``{"name": ..., ...}``."""
    from needlework.registry import backends

    if isinstance(spec, Mapping):
        return _from_mapping(spec)
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_dir() and (path / "model.json").is_file():
        path = path / "model.json"
    if text and path.is_file() and path.suffix == ".json":
        return read_model_json(path)
    backend, _, value = text.partition(":")
    unit = dict(backends.items()).get(backend)
    if not value or not hasattr(unit, "from_short"):
        raise ConfigError(
            f"model spec {text!r}: expected {short_forms()}, or a training run folder holding "
            "model.json"
        )
    return {"name": backend, **unit.from_short(value)}  # type: ignore[union-attr]


def load_backend(spec: str | Mapping[str, Any]) -> ChatModel:
    """Build the backend unit a spec names (fields checked like any config section)."""
    from needlework.config import build_unit
    from needlework.registry import backends

    return build_unit(backends, parse_model_spec(spec), source="model spec", field="model")


PATH_KEYS = ("path", "adapter")
"""model.json fields that may name a folder; ``./x`` there is relative to the model.json."""


def relative_to_run(spec: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """``spec`` with every path field inside ``run_dir`` written as ``./<relative>``, so a moved
    or copied run folder still loads; other paths and hub ids stay as they are."""
    root = run_dir.resolve()
    out = dict(spec)
    for key in PATH_KEYS:
        value = out.get(key)
        # outside the run folder (a base model elsewhere) a path stays absolute
        if isinstance(value, str) and Path(value).is_absolute():
            target = Path(value).resolve()
            if target.is_relative_to(root):
                out[key] = "./" + target.relative_to(root).as_posix()
    return out


def read_model_json(path: Path) -> dict[str, Any]:
    """A model.json as a backend spec, ``./`` paths resolved against its folder; its fields are
    checked as the backend's, errors naming this file."""
    from needlework.config import build_unit, validate
    from needlework.registry import backends

    try:
        text = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        what = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "invalid JSON"
        raise ConfigError(f"{what} ({first_line(exc)})", source=str(path)) from None
    data: dict[str, Any] = validate(dict[str, Any], text, source=str(path))
    for key in PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.startswith("./"):
            data[key] = str((path.parent / value).resolve())
    spec = _from_mapping(data)
    build_unit(backends, spec, source=str(path), field="model")
    return spec


def _from_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": ...}`` from a mapping that may name its backend ``backend`` (model.json)."""
    out = dict(data)
    if "name" in out or "backend" not in out:
        return out  # a mapping with both: 'backend' is an unknown key of the unit
    return {"name": out.pop("backend"), **out}
