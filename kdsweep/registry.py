"""The one shape every registry by name has: models, losses, datasets, schedulers and searchers.

A module that offers choices keeps one `Registry`, fills it with a decorator over its builders, and
asks it for an entry; a name it does not know gets the same one-line error everywhere (what exists,
what was probably meant), so adding a new choice is one decorated function. A library's whole
catalogue (timm's models) joins under a prefix, resolved when a name is asked for, not registered.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from kdsweep.errors import did_you_mean, unknown_name

Entry = TypeVar("Entry")
Fn = TypeVar("Fn", bound=Callable)


@dataclass(frozen=True)
class Catalogue(Generic[Entry]):
    """`PREFIX + NAME` for any NAME of a library's own list, resolved to `entry(NAME)` when asked for."""

    prefix: str  # e.g. "timm/"
    names: Callable[[], Collection[str]]  # the library's names (called when a prefixed name is checked)
    entry: Callable[[str], Entry]
    described: str  # what errors say it holds, e.g. "any model timm.list_models() lists"


class Registry(Generic[Entry]):
    """Entries by name; `kind` ("model", "loss", ...) is how errors call them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._catalogues: list[Catalogue[Entry]] = []

    def register(self, name: str, entry: Callable[[Fn], Entry] = lambda fn: fn) -> Callable[[Fn], Fn]:
        """Decorator: store `entry(fn)` (the function itself by default) as `name`; the function is unchanged."""

        def decorator(fn: Fn) -> Fn:
            self._entries[name] = entry(fn)
            return fn

        return decorator

    def add_catalogue(self, catalogue: Catalogue[Entry]) -> None:
        """Names `catalogue.prefix + NAME` resolve through the catalogue (registered names come first)."""
        self._catalogues.append(catalogue)

    def names(self, keep: Callable[[Entry], bool] = lambda entry: True) -> list[str]:
        """The registered names, sorted; `keep` filters on the entry (e.g. its declared capabilities).
        A catalogue's names are not listed: errors say what each catalogue holds."""
        return sorted(name for name, entry in self._entries.items() if keep(entry))

    def get(self, name: str, or_else: str = "") -> Entry:
        """The entry; an unknown name raises ValueError with the shared one-line message."""
        if name in self._entries:
            return self._entries[name]
        catalogue = self._catalogue_of(name)
        if catalogue is None:
            raise ValueError(self.unknown(name, or_else))
        return catalogue.entry(name.removeprefix(catalogue.prefix))

    def unknown(self, name: str, or_else: str = "") -> str:
        """What exists and what was probably meant: for a name with a catalogue's prefix, from that
        catalogue's names; otherwise from the registered names, the catalogues said as `PREFIX/NAME`."""
        name = str(name)
        for catalogue in self._catalogues:
            if name.startswith(catalogue.prefix):
                close = did_you_mean(name, sorted(catalogue.prefix + n for n in catalogue.names()))
                return f"unknown {self.kind} '{name}'{close} ({catalogue.prefix}NAME: {catalogue.described})"
        also = [f"{c.prefix}NAME ({c.described})" for c in self._catalogues]
        return unknown_name(self.kind, name, self.names(), or_else=", or ".join(filter(None, [*also, or_else])))

    def _catalogue_of(self, name: str) -> Catalogue[Entry] | None:
        """The catalogue that holds `name` (its prefix, then one of its names), if any."""
        for catalogue in self._catalogues:
            if name.startswith(catalogue.prefix) and name.removeprefix(catalogue.prefix) in catalogue.names():
                return catalogue
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and self._catalogue_of(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def copy(self) -> Registry[Entry]:
        """A registry with the same entries: tests register a throw-away entry on it."""
        clone: Registry[Entry] = Registry(self.kind)
        clone._entries = dict(self._entries)
        clone._catalogues = list(self._catalogues)
        return clone
