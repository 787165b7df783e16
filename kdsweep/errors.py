"""The one error type users see: bad input, reported as one line naming the field, exit code 2."""

from __future__ import annotations

import difflib

EXIT_BAD_INPUT = 2  # what every command exits with on a ConfigError
# An error shown in a table or a one-line message is cut here: its first line says what happened.
ERROR_CHARS = 300


class ConfigError(ValueError):
    """Bad user input (search space, flag, dataset path, checkpoint), found before any trial runs.

    `field` is spelled as the user wrote it: the YAML path (`teacher.arch`, `data.name`) or, for a
    command's own flags that map to no YAML field, the flag (`--resume`).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self):  # it crosses process boundaries (Ray pickles errors raised in workers)
        return (ConfigError, (self.field, self.problem))


def did_you_mean(name: str, choices: list[str]) -> str:
    """ "; did you mean 'x'?" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(str(name), choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, choices: list[str], or_else: str = "") -> str:
    """The one line every registry gives for a name it does not know: what exists, what was meant."""
    also = f", or {or_else}" if or_else else ""
    return f"unknown {kind} '{name}'{did_you_mean(name, choices)} (choose from: {', '.join(choices)}{also})"


def from_validation_error(error, prefix: str = "") -> ConfigError:
    """The first problem of a pydantic ValidationError, as one ConfigError naming the field."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in first["loc"])
    if not location and ": " in message:  # model-level validators name their field in the message
        location, message = message.split(": ", 1)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return ConfigError(prefix + location, message)


def one_line(error: BaseException | str, last: bool = False) -> str:
    """An error as one line for a report, cut to ERROR_CHARS: its first line, or its last where the text
    is a traceback (Ray's errors from workers: the last line is the exception that was raised)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return error.__class__.__name__ if isinstance(error, BaseException) else ""
    return (lines[-1] if last else lines[0])[:ERROR_CHARS]
