"""Name -> factory registries, so configs can say `arch: resnet18` or `method: lrp`."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories; unknown names raise a ConfigError listing the valid ones."""

    def __init__(self, kind: str, declared: tuple[str, ...] | None = None, plugins: tuple[str, ...] = ()):
        """`declared`: the only names it may hold (`protoprune.names`), in their listing order.
        `plugins`: modules of a higher layer that register entries here when imported (as timm's
        `@register_model`); they are imported by name on the first lookup, so the registry's own
        layer never imports the layers above it."""
        self.kind = kind
        self.declared = declared
        self.plugins = plugins
        self._items: dict[str, T] = {}

    def _load_plugins(self) -> None:
        for module in self.plugins:
            importlib.import_module(module)  # a no-op once imported (also while being imported)

    def register(self, name: str, item: T | None = None) -> Any:
        """Register `item` under `name`; without `item`, works as a decorator."""
        if self.declared is not None and name not in self.declared:
            raise ValueError(f"{name!r} is not a declared {self.kind} ({', '.join(self.declared)}): "
                             "declare it in protoprune.names first")  # fmt: skip
        if item is not None:
            self._items[name] = item
            return item

        def decorator(obj: T) -> T:
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}",
                f"{hint}choose one of: {', '.join(sorted(self._items))}",
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)


Factory = Callable[..., Any]
