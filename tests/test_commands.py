"""The `kdsweep` console script: each subcommand is `python -m kdsweep.X`, the same parser and help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdsweep.commands import COMMANDS

SCRIPT = Path(sys.executable).with_name("kdsweep")  # installed next to the interpreter by `pip install`


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_console_script_is_installed():
    assert SCRIPT.is_file(), f"{SCRIPT} missing: reinstall with pip install -e ."


def test_console_script_lists_the_five_commands():
    done = run(str(SCRIPT), "--help")
    assert done.returncode == 0
    assert set(COMMANDS) == {"search", "select", "export", "distill", "teacher"}
    for name in COMMANDS:
        assert f"  {name} " in done.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help_is_the_module_help(name):
    script = run(str(SCRIPT), name, "--help")
    module = run(sys.executable, "-m", f"kdsweep.{name}", "--help")
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout
    assert f"python -m kdsweep.{name}" in script.stdout


def test_subcommand_bad_flag_is_one_line_exit_2():
    done = run(str(SCRIPT), "select", "--mode", "sideways")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --mode: invalid choice: 'sideways' (choose from 'max', 'min')"]


def test_unknown_command_says_what_was_meant():
    done = run(str(SCRIPT), "serach")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: command: unknown command 'serach'; did you mean 'search'? "
        "(choose from: search, select, export, distill, teacher)"
    )


def test_no_command_prints_usage_and_exits_2():
    done = run(str(SCRIPT))
    assert done.returncode == 2
    assert "usage: kdsweep COMMAND" in done.stdout
