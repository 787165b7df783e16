"""The one shape every registry by name has: models, losses, datasets, schedulers and searchers.

A module that offers choices keeps one `Registry`, fills it with a decorator over its builders, and
asks it for an entry; a name it does not know gets the same one-line error everywhere (what exists,
what was probably meant), so adding a new choice is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kdsweep.errors import unknown_name

Entry = TypeVar("Entry")
Fn = TypeVar("Fn", bound=Callable)


class Registry(Generic[Entry]):
    """Entries by name; `kind` ("model", "loss", ...) is how errors call them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Callable[[Fn], Entry] = lambda fn: fn) -> Callable[[Fn], Fn]:
        """Decorator: store `entry(fn)` (the function itself by default) as `name`; the function is unchanged."""

        def decorator(fn: Fn) -> Fn:
            self._entries[name] = entry(fn)
            return fn

        return decorator

    def names(self, keep: Callable[[Entry], bool] = lambda entry: True) -> list[str]:
        """The registered names, sorted; `keep` filters on the entry (e.g. its declared capabilities)."""
        return sorted(name for name, entry in self._entries.items() if keep(entry))

    def get(self, name: str, or_else: str = "") -> Entry:
        """The entry; an unknown name raises ValueError with the shared one-line message."""
        if name not in self._entries:
            raise ValueError(self.unknown(name, or_else))
        return self._entries[name]

    def unknown(self, name: str, or_else: str = "") -> str:
        return unknown_name(self.kind, str(name), self.names(), or_else=or_else)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def copy(self) -> Registry[Entry]:
        """A registry with the same entries: tests register a throw-away entry on it."""
        clone: Registry[Entry] = Registry(self.kind)
        clone._entries = dict(self._entries)
        return clone
