"""The registry every choice by name shares: the entry it stores, the names it lists, the error it gives."""

import pytest

from kdsweep.registry import Registry


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
