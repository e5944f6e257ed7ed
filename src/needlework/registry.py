"""Name -> class registries for the pluggable units (generators, backends, benchmarks, trainers).

A unit registers itself with a decorator under the snake_case name equal to its file stem;
each stage's ``__init__`` imports its unit modules so that importing the stage fills the registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from needlework.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of unit classes with "did you mean" errors."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self._package = package  # imported lazily so that registering modules load on first use
        self._units: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._units and self._units[name] is not cls:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._units[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def _load(self) -> None:
        import importlib

        importlib.import_module(self._package)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._units:
            close = difflib.get_close_matches(name, self._units, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} '{name}'{hint} (known: {', '.join(self.names())})"
            )
        return self._units[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._units)

    def items(self) -> list[tuple[str, type[T]]]:
        self._load()
        return sorted(self._units.items())


generators: Registry = Registry("generator", "needlework.datagen")
trainers: Registry = Registry("training backend", "needlework.training")
backends: Registry = Registry("inference backend", "needlework.models")
benchmarks: Registry = Registry("benchmark", "needlework.evaluation")

ALL = {
    "generators": generators,
    "trainers": trainers,
    "backends": backends,
    "benchmarks": benchmarks,
}
