"""The `kdsweep` console script: each subcommand is `python -m kdsweep.X`, the same parser and help."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from kdsweep import commands
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


def test_the_script_runs_the_modules_main_with_its_exit_code():
    # One subprocess through the installed script (the others run commands.main in-process: each start
    # imports torch and Ray, seconds apiece on 2 cores).
    done = run(str(SCRIPT), "select", "--mode", "sideways")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --mode: invalid choice: 'sideways' (choose from 'max', 'min')"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help_is_the_module_help(name, capsys):
    module = importlib.import_module(f"kdsweep.{name}")
    with pytest.raises(SystemExit) as done:
        commands.main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out == module.build_parser().format_help()
    assert f"python -m kdsweep.{name}" in module.build_parser().format_help()


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
