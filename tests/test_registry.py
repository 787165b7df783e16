"""The registry every choice by name shares: the entry it stores, the names it lists, the error it gives."""

import pytest

from kdsweep.registry import Catalogue, Registry


def test_a_decorated_function_is_stored_through_its_entry_and_returned_unchanged():
    registry: Registry[tuple[str, object]] = Registry("widget")

    def build():
        return 1

    decorated = registry.register("b", lambda fn: ("entry", fn))(build)
    registry.register("a", lambda fn: ("other", fn))(build)

    assert decorated is build
    assert registry.get("b") == ("entry", build)
    assert registry.names() == ["a", "b"]
    assert registry.names(lambda entry: entry[0] == "other") == ["a"]
    assert "a" in registry
    assert "c" not in registry


def test_an_unknown_name_says_what_exists_and_what_was_meant():
    registry: Registry[object] = Registry("widget")
    registry.register("resnet8")(len)
    registry.register("vgg11")(len)

    with pytest.raises(ValueError, match="resnet9") as refused:
        registry.get("resnet9")
    assert str(refused.value) == "unknown widget 'resnet9'; did you mean 'resnet8'? (choose from: resnet8, vgg11)"
    assert registry.unknown("x", or_else="a folder").endswith("(choose from: resnet8, vgg11, or a folder)")


def test_a_copy_takes_new_entries_without_changing_the_original():
    registry: Registry[object] = Registry("widget")
    registry.register("a")(len)
    clone = registry.copy()
    clone.register("b")(len)

    assert clone.names() == ["a", "b"]
    assert registry.names() == ["a"]


def _catalogue_registry() -> Registry[tuple[str, str]]:
    registry: Registry[tuple[str, str]] = Registry("widget")
    registry.register("local", lambda fn: ("registered", fn.__name__))(len)
    registry.add_catalogue(Catalogue("lib/", lambda: {"alpha", "beta"}, lambda name: ("lib", name), "any lib widget"))
    return registry


def test_a_catalogue_resolves_its_prefixed_names_without_listing_them():
    registry = _catalogue_registry()

    assert registry.get("lib/alpha") == ("lib", "alpha")
    assert registry.get("local") == ("registered", "len")
    assert "lib/beta" in registry
    assert "lib/gamma" not in registry
    assert "alpha" not in registry  # only with its prefix
    assert registry.names() == ["local"]


def test_an_unknown_name_is_matched_against_the_catalogue_its_prefix_names():
    registry = _catalogue_registry()

    with pytest.raises(ValueError, match="lib/alpa") as refused:
        registry.get("lib/alpa")
    assert str(refused.value) == "unknown widget 'lib/alpa'; did you mean 'lib/alpha'? (lib/NAME: any lib widget)"
    assert registry.unknown("lokal") == (
        "unknown widget 'lokal'; did you mean 'local'? (choose from: local, or lib/NAME (any lib widget))"
    )
    assert registry.unknown("x", or_else="a folder").endswith(
        "(choose from: local, or lib/NAME (any lib widget), or a folder)"
    )
