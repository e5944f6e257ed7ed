"""The one schema layer: configs, records and settings are pydantic dataclasses, checked where
the data enters and trusted after.

A field's limits live on the field (``Annotated[int, Field(ge=1)]``, ``Literal``, ``Path``)
beside its attribute docstring, which is also its help text (``needlework ls NAME``,
docs/formats.md); a rule between fields lives in the class's ``__post_init__`` and raises
``ValueError("field: what was expected")``. A field typed ``Annotated[Proto, <Registry>]`` holds
a registered unit chosen by its ``name:`` key. Every ``ValidationError`` becomes one line here
(:func:`config_error`), naming the file, the dotted field and what was expected.

YAML files map onto these classes field by field; ``dotted.key=value`` overrides are applied to
the mapping first (a list item can be named by its ``name``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

import pydantic
import typing_extensions
import yaml
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError

from needlework.errors import ConfigError

T = TypeVar("T")

STRICT = ConfigDict(
    extra="forbid",  # an unknown key is an error that lists the valid ones
    use_attribute_docstrings=True,  # the docstring under a field is its description
    coerce_numbers_to_str=True,  # `revision: 1234` in YAML is the string "1234"
    arbitrary_types_allowed=True,
)

# Limits that many fields share, declared once.
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]
"""numpy/torch seeding refuses anything else, mid-setup."""


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError(f"expected a non-empty string, got {text!r}")
    return text


def _distinct(items: Any) -> Any:
    if len(set(items)) != len(items):
        raise ValueError(f"expected distinct items, got {list(items)}")
    return items


def _ordered(bounds: Any) -> Any:
    if bounds[0] > bounds[1]:
        raise ValueError(f"expected [lo, hi] with lo <= hi, got {list(bounds)}")
    return bounds


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
Ordered = AfterValidator(_ordered)
"""Add to a ``[lo, hi]`` pair type: ``lo <= hi``."""
Distinct = AfterValidator(_distinct)
"""Add to a list/tuple type: ``Annotated[tuple[int, ...], Distinct]``."""


@typing_extensions.dataclass_transform(
    frozen_default=True, field_specifiers=(dataclasses.field, Field)
)
def config(cls: type[T]) -> type[T]:
    """A frozen pydantic dataclass with the project's settings (:data:`STRICT`)."""
    return pydantic.dataclasses.dataclass(frozen=True, config=STRICT)(cls)  # type: ignore[return-value]


# -- reading ---------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing files and bad syntax."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError("is a folder; expected a YAML config file", source=str(path))
    if not p.is_file():
        what = "is not a regular file" if p.exists() else "file not found"
        raise ConfigError(f"{what} (expected a YAML config)", source=str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text (expected a YAML config)", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    if not isinstance(data, dict | None):
        raise ConfigError(
            f"expected a mapping at top level, got {type(data).__name__}", source=str(path)
        )
    return data or {}


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


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``dotted.key=value`` override applied."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        keys, value = parse_override(text)
        set_field(out, keys, value, text)
    return out


def set_field(data: dict[str, Any], keys: Sequence[str], value: Any, text: str = "") -> None:
    """Set the field at the dotted ``keys`` of a config mapping in place (a list item is named
    by its ``name`` or its index; a unit given by name only becomes ``{name: ...}``)."""
    node: Any = data
    for depth, k in enumerate(keys):
        key: Any = _list_key(text or ".".join(keys), node, k) if isinstance(node, list) else k
        if depth == len(keys) - 1:
            node[key] = value
            return
        child = node[key] if isinstance(node, list) else node.get(key)
        if isinstance(child, str):  # a unit given by name only: `generator: simple_dict_kv`
            child = {"name": child}
        elif not isinstance(child, dict | list):
            child = {}
        node[key] = child
        node = child


def _list_key(text: str, items: list[Any], key: str) -> int:
    """The index an override names in a list: the one item whose ``name`` is ``key`` (robust
    to reordering), or a plain index."""
    if key.isdigit():
        if int(key) >= len(items):
            raise ConfigError(
                f"override '{text}': '{key}' is not an index of a list of {len(items)} items"
            )
        return int(key)
    names = [_item_name(item) for item in items]
    hits = [i for i, name in enumerate(names) if name == key]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(map(str, names))
    if not hits:
        raise ConfigError(f"override '{text}': no item named '{key}' in the list ({listed})")
    raise ConfigError(
        f"override '{text}': {len(hits)} items are named '{key}' ({listed}); "
        f"name one by its index ({', '.join(map(str, hits))})"
    )


def _item_name(item: Any) -> Any:
    return item.get("name") if isinstance(item, dict) else item


# -- validating ------------------------------------------------------------------------------
@functools.cache
def adapter(tp: Any) -> TypeAdapter[Any]:
    """The (cached) validator of a type."""
    return TypeAdapter(tp)


def validate(tp: type[T] | Any, data: Any, *, source: str = "<config>", prefix: str = "") -> T:
    """``data`` as a ``tp``; a ValidationError becomes one :class:`ConfigError` line naming
    ``source`` and the dotted field (under ``prefix``)."""
    try:
        return adapter(cast(Any, tp)).validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise config_error(exc, data, source, prefix, tp) from None


def invalid(loc: Sequence[str | int], message: str) -> ValidationError:
    """A validation error at a location of one's choosing, for a rule between fields whose
    field path is not one identifier (``raise invalid(("variants", name, "seeds"), "...")``);
    pydantic adds the path of the object being validated in front."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    error = PydanticCustomError("unit", "{msg}", {"msg": message})
    detail = InitErrorDetails(type=error, loc=tuple(loc), input=None)
    return ValidationError.from_exception_data("needlework", [detail])


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a YAML file (or a mapping) plus overrides; errors name file and field."""
    source = str(path) if path is not None else "<config>"
    raw = dict(data) if data is not None else (read_yaml(path) if path is not None else {})
    return validate(cls, apply_overrides(raw, overrides), source=source)


def build_unit(registry: Any, value: Any, *, source: str = "<config>", field: str = "") -> Any:
    """The registered unit ``value`` names (``{"name": ..., fields...}`` or just the name)."""
    return validate(Annotated[Any, registry], value, source=source, prefix=field)


def config_error(
    exc: ValidationError, data: Any, source: str, prefix: str = "", tp: Any = None
) -> ConfigError:
    """The first error of ``exc`` as one line: ``source: field 'a.b': what was expected``.
    Where a value could be one of several types (a union), what each accepts is joined."""
    errors = exc.errors(include_url=False)
    loc, msg = _error_text(errors[0], tp)
    branches = [_error_text(e, tp)[1] for e in errors if _error_text(e, tp)[0] == loc]
    if len(branches) > 1:  # a union: "expected 'auto' or expected > 0" -> one list
        msg = " or ".join(dict.fromkeys(b.split(", got ")[0] for b in branches))
        msg = msg.replace(" or expected ", " or ")
        if not isinstance(errors[0].get("input"), dict | list):
            msg += f", got {errors[0].get('input')!r}"
    path = ".".join([p for p in (prefix,) if p] + _named_loc(loc, data))
    return ConfigError(msg, source=source, field=path or None)


def _error_text(err: Any, tp: Any) -> tuple[list[Any], str]:
    """``(location, message)`` of one pydantic error, in the project's words; a union's member
    tags (``constrained-int``, ``literal['auto']``, a class name) are not field names and go."""
    loc = [p for p in err["loc"] if isinstance(p, int) or not _is_union_tag(p)]
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx", {})
    if kind == "value_error":  # a rule raised ``ValueError("field: ...")`` in a validator
        msg = msg.removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and head.isidentifier():
            loc, msg = [*loc, head], rest
        return loc, msg
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        valid = ", ".join(sorted(fields_at(tp, loc[:-1]))) if tp is not None else ""
        return loc, f"unknown key(s) {loc[-1]!r}" + (f"; valid keys: {valid}" if valid else "")
    if kind in ("missing", "missing_argument"):
        return loc, "is required but missing"
    if kind == "unit":
        return loc, str(ctx.get("msg", msg))
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        most = "most" if kind.endswith("long") else "least"
        size = ctx.get("max_length" if most == "most" else "min_length")
        unit = "character(s)" if kind.startswith("string") else "item(s)"
        msg = f"expected at {most} {size} {unit}"
    elif kind == "literal_error":
        choices = str(ctx["expected"])
        msg = ("expected one of " if " or " in choices else "expected ") + choices.replace(
            " or ", ", "
        )
    elif kind == "string_pattern_mismatch":
        msg = f"expected text matching {ctx['pattern']!r}"
    elif base != kind:  # int_parsing, list_type, ...: the type named as Python names it
        msg = "expected " + _TYPE_NAMES.get(base, base)
    msg = msg.replace("Input should be ", "expected ", 1)
    for words, sign in _COMPARISONS:
        msg = msg.replace(words, sign)
    if not isinstance(err.get("input"), dict | list):
        msg += f", got {err.get('input')!r}"
    return loc, msg


_COMPARISONS = (
    ("greater than or equal to", ">="),
    ("less than or equal to", "<="),
    ("greater than", ">"),
    ("less than", "<"),
)


def _is_union_tag(part: str) -> bool:
    """pydantic names a union member's error by its type: ``int``, ``constrained-float``,
    ``literal['a']``, ``function-after[...]``, a class name; our fields are snake_case."""
    class_name = part[:1].isupper() and not part.isupper()  # not NEEDLEWORK_THREADS
    return any(c in part for c in "[-") or part in _TYPE_TAGS or class_name


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple", "bytes", "set"}


_TYPE_NAMES = {
    "string": "str",
    "dict": "a mapping",
    "list": "a list",
    "tuple": "a list",
    "model": "a mapping",
    "dataclass": "a mapping",
}


def _named_loc(loc: list[Any], data: Any) -> list[str]:
    """A location with list items named by their unit ``name`` where that is unambiguous
    (``benchmarks.mdqa.num_docs``), as overrides name them."""
    out = []
    for depth, part in enumerate(loc):
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            name = _item_name(data[part])
            names = [_item_name(x) for x in data]
            inside = depth < len(loc) - 1  # the error is in the item's fields, not the item
            unique = isinstance(name, str) and names.count(name) == 1
            out.append(name if inside and unique else str(part))
            data = data[part]
        elif isinstance(data, dict) and part not in data and data.get("name") == part:
            continue  # a discriminated union's tag: the item's own ``name``, not a field
        else:
            out.append(str(part))
            data = data.get(part) if isinstance(data, dict) else None
    return out


def fields_at(tp: Any, loc: Sequence[Any]) -> list[str]:
    """The field names of the dataclass found by following ``loc`` from ``tp`` (for the list
    of valid keys in an error); [] when the path leads elsewhere."""
    from needlework.registry import Registry

    for part in [*loc, None]:
        while True:
            origin, args = get_origin(tp), get_args(tp)
            if origin is Annotated:
                reg = next((a for a in args[1:] if isinstance(a, Registry)), None)
                tp = args[0] if reg is None else reg.get_or_none(part)
                if reg is not None:
                    break  # the tag consumed this part
            elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
                tp = next((a for a in args if a is not type(None)), None)
            else:
                break
        if part is None:
            break
        if isinstance(part, str) and dataclasses.is_dataclass(tp) and isinstance(tp, type):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        elif isinstance(part, int) or get_origin(tp) in (dict, Mapping):
            args = get_args(tp)
            tp = args[-1] if args and args[-1] is not Ellipsis else (args[0] if args else None)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return [f.name for f in dataclasses.fields(tp) if f.init and not f.name.startswith("_")]
    return []


# -- writing ---------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML-able data; units get their registry ``name`` first."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        name = getattr(type(obj), "registry_name", None)
        if name:
            out["name"] = name
        for f in dataclasses.fields(obj):
            if f.init and not f.name.startswith("_"):
                out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
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
    """Each field's docstring (its pydantic description; an inherited field keeps the one
    written where it was declared), for ``needlework ls NAME`` and docs/formats.md."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name, info in getattr(klass, "__pydantic_fields__", {}).items():
            if info.description:
                docs[name] = info.description
    return docs


def describe_fields(cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, type with limits, default, docstring)`` of every init field of a config class,
    read from its schema (``needlework ls NAME``, docs/formats.md)."""
    docs = field_docs(cls)
    out = []
    for name, info in getattr(cls, "__pydantic_fields__", {}).items():
        if name.startswith("_") or info.init is False:
            continue
        kind = _type_text(info.annotation)
        limits = [t for m in info.metadata for t in _limit_texts(m)]
        if limits:
            kind += f" ({', '.join(limits)})"
        if info.default_factory is not None:
            default = repr(info.default_factory())  # type: ignore[call-arg]
        elif info.is_required():
            default = "(required)"
        else:
            default = repr(info.default)
        out.append((name, kind, default, docs.get(name, "")))
    return out


def _type_text(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        limits = [t for m in args[1:] for t in _limit_texts(m)]
        base = _type_text(args[0])
        return f"{base} ({', '.join(limits)})" if limits else base
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_text(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_LIMITS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length"}


def _limit_texts(meta: Any) -> list[str]:
    """``[">= 1", "<= 18"]`` for ``Field(ge=1, le=18)``-style limits (``annotated_types``
    objects and FieldInfos carrying several of them)."""
    out = [
        f"{sign} {value}"
        for attr, sign in _LIMITS.items()
        if (value := getattr(meta, attr, None)) is not None and not callable(value)
    ]
    return out + [t for item in getattr(meta, "metadata", ()) for t in _limit_texts(item)]


# -- config files ----------------------------------------------------------------------------
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
    return load_target(next(t for k, t in CONFIG_KINDS.values() if k == kind))  # type: ignore[no-any-return]


def dry_run_done(verb: str, args: Any, describe: Callable[[], str] | None = None) -> bool:
    """For ``--dry-run``: say the config passed its checks; the caller then returns 0."""
    if not getattr(args, "dry_run", False):
        return False
    source = args.config or "the command line"
    print(f"needlework {verb}: {source}: config ok (--dry-run: nothing run)")
    if describe is not None:
        print(describe())
    return True
