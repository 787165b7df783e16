"""Your own models and datasets: modules that register them, imported wherever a trial may run.

A search space lists them under `plugins:`; the driver imports them before it checks the space
(so the space may name what they register), and every trial imports them again in its own
process, on whichever node it runs. They must be importable there (installed, or on PYTHONPATH).
"""

from __future__ import annotations

import importlib

from kdsweep.errors import ConfigError, one_line


def import_plugins(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(str(name))
        except Exception as error:  # ImportError, or the module itself failing: bad input either way
            raise ConfigError(
                "plugins", f"cannot import '{name}' ({error.__class__.__name__}: {one_line(error)})"
            ) from None
