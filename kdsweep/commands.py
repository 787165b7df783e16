"""`kdsweep COMMAND ...`: the console script, one name for the `python -m kdsweep.X` commands.

`kdsweep search --num-samples 4` is `python -m kdsweep.search --num-samples 4`: the same module's
`main(argv)`, so the same parser, help, errors and exit codes.
"""

from __future__ import annotations

import importlib
import sys

from kdsweep.errors import EXIT_BAD_INPUT, unknown_name

COMMANDS = {
    "search": "run a distillation sweep (python -m kdsweep.search)",
    "select": "pick a sweep's champion and register it (python -m kdsweep.select)",
    "export": "export a registered student, check it, time it (python -m kdsweep.export)",
    "distill": "run one distillation trial (python -m kdsweep.distill)",
    "teacher": "train or import a teacher and save it (python -m kdsweep.teacher)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {what}" for name, what in COMMANDS.items()]
    return "usage: kdsweep COMMAND [ARGS ...]  (kdsweep COMMAND --help for its flags)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: command: {unknown_name('command', name, list(COMMANDS))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    module = importlib.import_module(f"kdsweep.{name}")
    code = module.main(rest)
    if name == "search":  # as `python -m kdsweep.search` leaves: without the interpreter's slow teardown
        module.exit_now(code)
    return code
