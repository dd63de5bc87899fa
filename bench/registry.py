"""A registry of named things (algorithms), filled by a decorator and by plugin entry points."""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from bench.errors import BenchError, did_you_mean

T = TypeVar("T")
PLUGINS_VARIABLE = "BENCH_PLUGINS"
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Names to objects; duplicates raise, unknown names raise with suggestions.

    ``entry_point_group`` names a ``importlib.metadata`` group: every entry point in it is loaded
    (importing a plugin module runs its ``@register`` decorators) the first time the registry is
    read, so third-party packages add entries without editing bench.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        # BENCH_PLUGINS: modules to import, for algorithms not packaged with an entry point (Ray
        # workers inherit the variable, so the same algorithms exist there).
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
            try:
                importlib.import_module(module)
            except Exception as exc:
                raise BenchError(f"{PLUGINS_VARIABLE}: module {module!r} failed to import ({type(exc).__name__}: {exc}); "
                                 f"fix it, or remove it from {PLUGINS_VARIABLE}") from None
        for ep in entry_points(group=self.entry_point_group) if self.entry_point_group else ():
            try:
                ep.load()  # importing the plugin's module runs its @register decorators
            except Exception as exc:
                raise BenchError(
                    f"plugin entry point {ep.name!r} ({ep.value}) in group "
                    f"{self.entry_point_group!r} failed to load: {exc}; fix or uninstall the plugin"
                ) from exc

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise BenchError(
                f"unknown {self.kind} {name!r}; {did_you_mean(name, self._entries)} "
                f"(see `python -m bench list`)"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        self._load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
