"""YAML configs mapped onto typed dataclasses, with ``dotted.key=value`` overrides.

Rules (house style): defaults live in the dataclass only; an unknown key is an error listing the
valid ones; a field typed ``Annotated[Proto, <Registry>]`` holds a registered unit chosen by its
``name:`` key; ``__post_init__`` validates ranges and raises ``ValueError`` naming the field, which
is turned into a :class:`ConfigError` that names the file as well.
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin

import yaml

from needlework.errors import ConfigError
from needlework.registry import Registry

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing files and bad syntax."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError("is a folder; expected a YAML config file", source=str(path))
    if p.exists() and not p.is_file():
        raise ConfigError("is not a regular file (expected a YAML config)", source=str(path))
    if not p.is_file():
        raise ConfigError("file not found (expected a YAML config)", source=str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text (expected a YAML config)", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"invalid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(path)
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at top level, got {type(data).__name__}", source=str(path)
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=1`` -> (["a", "b"], 1); the value is parsed as a YAML scalar or list."""
    if "=" not in text or text.startswith("="):
        raise ConfigError(f"override '{text}' is not of the form dotted.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``dotted.key=value`` override applied."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = out
        k: str | int  # a list index is converted to int below
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):  # `benchmarks.kv_retrieval.limit=5` or `benchmarks.0...`
                k = _list_key(text, node, k)
                child = node[k]
            else:
                child = node.get(k)
            if last:
                node[k] = value
                break
            if isinstance(child, str):  # a unit given by name only: `generator: simple_dict_kv`
                child = {"name": child}
                node[k] = child
            elif not isinstance(child, (dict, list)):
                child = {}
                node[k] = child
            node = child
    return out


def _list_key(text: str, items: list[Any], key: str) -> int:
    """The index an override names in a list: the one item whose ``name`` is ``key`` (robust
    to reordering), or a plain index."""
    if key.isdigit():
        if int(key) >= len(items):
            raise ConfigError(
                f"override '{text}': '{key}' is not an index of a list of {len(items)} items"
            )
        return int(key)

    def name(item: Any) -> Any:
        return item.get("name") if isinstance(item, dict) else item

    hits = [i for i, item in enumerate(items) if name(item) == key]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(str(name(item)) for item in items)
    if not hits:
        raise ConfigError(f"override '{text}': no item named '{key}' in the list ({names})")
    raise ConfigError(
        f"override '{text}': {len(hits)} items are named '{key}' ({names}); "
        f"name one by its index ({', '.join(map(str, hits))})"
    )


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a YAML file (or a mapping) plus overrides; errors name file and field."""
    source = str(path) if path is not None else "<config>"
    raw = dict(data) if data is not None else (read_yaml(path) if path is not None else {})
    raw = apply_overrides(raw, overrides)
    return from_dict(cls, raw, source=source)


def from_dict(
    cls: type[T], data: Mapping[str, Any], *, source: str = "<config>", prefix: str = ""
) -> T:
    """Recursively convert a mapping into the dataclass ``cls``, checking every field."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping, got {type(data).__name__}",
            source=source,
            field=prefix.rstrip(".") or None,
        )
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if f.init}  # T: a dataclass
    unknown = [k for k in data if k not in fields and k != "name"]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join(sorted(fields))}",
            source=source,
            field=prefix + unknown[0],
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("is required but missing", source=source, field=prefix + name)
            continue
        kwargs[name] = _convert(hints[name], data[name], source, prefix + name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        field = None
        # __post_init__ messages start with the field name: "num_dicts: must be >= 2"
        head = msg.split(":", 1)[0]
        if head in fields:
            field, msg = prefix + head, msg.split(":", 1)[1].strip()
        raise ConfigError(msg, source=source, field=field or (prefix.rstrip(".") or None)) from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, source: str, field: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        base, *meta = args
        registry = next((m for m in meta if isinstance(m, Registry)), None)
        if registry is not None:
            return build_unit(registry, value, source=source, field=field)
        return _convert(base, value, source, field)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, source, field)
            except ConfigError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(
                f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}",
                source=source,
                field=field,
            )
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"expected one of {', '.join(map(repr, args))}, got {value!r}",
                source=source,
                field=field,
            )
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", source=source, field=field)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"expected a list of {len(args)} items, got {value!r}",
                    source=source,
                    field=field,
                )
            return tuple(
                _convert(a, v, source, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, source, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", source=source, field=field)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, source, f"{field}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(cast("type[Any]", tp), value, source=source, prefix=field + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `5e-6` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        return value
    raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", source=source, field=field)


def build_unit(registry: Registry, value: Any, *, source: str = "<config>", field: str = "") -> Any:
    """Instantiate the registered unit named by ``value['name']`` (or ``value`` if a string)."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError(
            f"expected a mapping with a 'name:' key choosing a {registry.kind} "
            f"(one of {', '.join(registry.names())})",
            source=source,
            field=field,
        )
    try:
        cls = registry.get(str(value["name"]))
    except ConfigError as exc:
        raise ConfigError(str(exc), source=source, field=f"{field}.name") from None
    return from_dict(cls, value, source=source, prefix=f"{field}.")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML-able data; units get their registry ``name`` first."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        name = getattr(type(obj), "registry_name", None)
        if name:
            out["name"] = name
        for f in dataclasses.fields(obj):
            if f.init:
                out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    """Resolved config as YAML text (stable key order as declared)."""
    buf = io.StringIO()
    yaml.safe_dump(to_dict(obj), buf, sort_keys=False, allow_unicode=True)
    return buf.getvalue()


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right under a field) of a dataclass and its
    bases, for ``needlework ls NAME``."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


# A config file's kind is told by a top-level key only that kind has.
CONFIG_KINDS = {
    "generator": ("generate", "needlework.datagen.pipeline:GenerateConfig"),
    "trainer": ("train", "needlework.training.config:TrainConfig"),
    "benchmarks": ("eval", "needlework.evaluation.runner:EvalConfig"),
    "variants": ("recipe", "needlework.experiment:RecipeConfig"),
    "ctx_sizes": ("padded_reasoning", "needlework.datagen.padded_reasoning:PaddedReasoning"),
}
# Files read by other tools (``accelerate launch --config_file``), told by their own keys.
FOREIGN_KINDS = {"compute_environment": "accelerate", "distributed_type": "accelerate"}


def config_kind(data: Mapping[str, Any]) -> str | None:
    """``generate``, ``train``, ``eval``, ``recipe``, a foreign kind (``accelerate``) or None."""
    for key, (kind, _) in CONFIG_KINDS.items():
        if key in data:
            return kind
    return next((kind for key, kind in FOREIGN_KINDS.items() if key in data), None)


def load_target(target: str) -> Any:
    """``"package.module:attr"`` imported on demand (configs and CLI verbs name code so)."""
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def config_class(kind: str) -> type:
    """The dataclass of a needlework config kind (imported on demand)."""
    return load_target(next(t for k, t in CONFIG_KINDS.values() if k == kind))


def dry_run_done(verb: str, args: Any) -> bool:
    """For ``--dry-run``: say the config passed its checks; the caller then returns 0."""
    if not getattr(args, "dry_run", False):
        return False
    source = args.config or "the command line"
    print(f"needlework {verb}: {source}: config ok (--dry-run: nothing run)")
    return True
