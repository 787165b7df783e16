"""The one error type users see: bad input, reported as one line naming the field, exit code 2."""


class ConfigError(ValueError):
    """Bad user input (search space, flag, dataset path, checkpoint), found before any trial runs."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


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
