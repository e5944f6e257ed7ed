"""Name -> class registries for the pluggable units (generators, backends, benchmarks, trainers).

A unit registers itself with a decorator under the snake_case name equal to its file stem;
each stage's ``__init__`` calls :func:`discover`, which imports every module of the stage that
registers a unit, so importing the stage fills the registry and adding a unit is adding a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from needlework.errors import ConfigError, ContractError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of unit classes with "did you mean" errors."""

    def __init__(
        self,
        kind: str,
        package: str,
        required: tuple[str, ...] = (),
        either: tuple[tuple[str, ...], ...] = (),
    ):
        self.kind = kind
        # members every unit must have (checked when it registers, so a unit missing one fails
        # at import with the list, not later as an AttributeError deep in a run); ``either``:
        # alternative member sets of which a unit must have one complete set
        self.required, self.either = required, either
        self._package = package  # imported lazily so that registering modules load on first use
        self._units: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            self.check(name, cls)
            if name in self._units and self._units[name] is not cls:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._units[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def check(self, name: str, cls: type) -> None:
        """ContractError (a TypeError) naming every required member ``cls`` lacks."""
        missing = [m for m in self.required if not hasattr(cls, m) and m not in _fields(cls)]
        if self.either and not any(
            all(hasattr(cls, m) or m in _fields(cls) for m in group) for group in self.either
        ):
            missing.append(" and ".join(self.either[0]) + " (or " + " and ".join(
                " and ".join(g) for g in self.either[1:]) + ")")  # fmt: skip
        if missing:
            raise ContractError(
                f"{self.kind} '{name}' ({cls.__module__}.{cls.__name__}) lacks required "
                f"member(s): {', '.join(missing)}"
            )
        stem = cls.__module__.rpartition(".")[2]
        if cls.__module__.startswith("needlework.") and stem != name:
            # one unit, one file, found by its name: needlework/<stage>/.../<name>.py
            raise ContractError(
                f"{self.kind} '{name}' is defined in {cls.__module__}: a unit's file must be "
                f"named after it ({name}.py)"
            )

    def _load(self) -> None:
        import importlib

        importlib.import_module(self._package)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._units:
            raise ConfigError(self.unknown(name))
        return self._units[name]

    def get_or_none(self, name: Any) -> type[T] | None:
        self._load()
        return self._units.get(name) if isinstance(name, str) else None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """A field typed ``Annotated[Proto, <registry>]`` holds the unit its ``name`` chooses,
        validated as that unit's class (looked up when validated: tests register units late)."""
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(self.validate_unit)

    def validate_unit(self, value: Any) -> T:
        """``{"name": ..., fields...}`` (or just the name, or a built unit) -> the unit."""
        from needlework.config import adapter, invalid

        if isinstance(value, tuple(self.items_classes())):
            return value  # type: ignore[return-value]
        value = {"name": value} if isinstance(value, str) else value
        problem, loc = "", cast("tuple[str, ...]", ())
        if not isinstance(value, Mapping) or "name" not in value:
            problem = (
                f"expected a mapping with a 'name:' key choosing a {self.kind} "
                f"(one of {', '.join(self.names())})"
            )
        elif str(value["name"]) not in self.names():
            problem, loc = self.unknown(str(value["name"])), ("name",)
        if problem:
            raise invalid(loc, problem)
        fields = {k: v for k, v in value.items() if k != "name"}
        unit: Any = self._units[str(value["name"])]
        return adapter(unit).validate_python(fields)  # type: ignore[no-any-return]

    def items_classes(self) -> list[type[T]]:
        self._load()
        return list(self._units.values())

    def unknown(self, name: str) -> str:
        """``unknown <kind> 'x'; did you mean ...? (known: ...)``."""
        close = difflib.get_close_matches(name, self._units, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        self._load()
        return sorted(self._units)

    def items(self) -> list[tuple[str, type[T]]]:
        self._load()
        return sorted(self._units.items())


def discover(package: str, paths: Iterable[str]) -> list[str]:
    """Import, in name order, every module of ``package`` whose source registers a unit (a
    line starting ``@<registry>.register(``); helper modules beside the units are not imported.
    Returns the module names imported."""
    import importlib
    import pkgutil
    import re

    decorator = re.compile(r"^@\w+\.register\(", re.MULTILINE)

    found = []
    for info in sorted(pkgutil.iter_modules(list(paths)), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        source = Path(info.module_finder.path) / f"{info.name}.py"  # type: ignore[union-attr]
        if source.is_file() and decorator.search(source.read_text(encoding="utf-8")):
            importlib.import_module(f"{package}.{info.name}")
            found.append(info.name)
    return found


def _fields(cls: type) -> set[str]:
    """Dataclass fields without a class-level default are not attributes of the class."""
    return set(getattr(cls, "__dataclass_fields__", {}))


# The members of each contract (base.py of each stage documents them).
generators: Registry = Registry(
    "generator", "needlework.datagen", ("build", "unit", "num_units", "frac_0", "frac_top5")
)
trainers: Registry = Registry("training backend", "needlework.training", ("preflight", "train"))
backends: Registry = Registry(
    "inference backend",
    "needlework.models",
    (
        "generate",
        "describe",
        "speed_fields",
        "token_counter",
        "generate_iter",
        "log_likelihoods",
        "usage",
        "provenance",
        "count_tokens",
        "lm_eval_model",
    ),
)
benchmarks: Registry = Registry(
    "benchmark",
    "needlework.evaluation",
    ("label", "group_by", "primary_metric"),  # label(): subclass evaluation.base.Benchmark
    either=(("samples", "score"), ("run_suite",)),
)

ALL = {
    "generators": generators,
    "trainers": trainers,
    "backends": backends,
    "benchmarks": benchmarks,
}
