"""What to ship and where: the export flags, validated once, before any model is loaded or any data read."""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdsweep.errors import ConfigError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> file suffix
QUANTIZATIONS = ("int8",)
DEFAULT_TOLERANCE = 1e-4  # float32 kernels differ in summation order: ~1e-5 on these nets; a real bug is >1e-2
DEFAULT_LATENCY_SECONDS = 1.0


@dataclass(frozen=True)
class ShipSpec:
    """One export, as the flags asked for it. `output` None: a name from the model, in this directory."""

    format: str
    output: Path | None = None
    tolerance: float = DEFAULT_TOLERANCE
    quantize: str | None = None
    latency_seconds: float = DEFAULT_LATENCY_SECONDS
    format_flag: str = "--format"  # how the command spells the format, for its errors

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(self.format_flag, f"unknown format '{self.format}' (choose from: {', '.join(FORMATS)})")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ConfigError("--quantize", f"unknown quantization '{self.quantize}' (choose from: int8)")
        if self.quantize and self.format != "onnx":
            raise ConfigError(
                "--quantize", f"int8 needs {self.format_flag} onnx (ONNX Runtime's quantizer); got {self.format}"
            )
        for flag, value in (("--tolerance", self.tolerance), ("--latency-seconds", self.latency_seconds)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(flag, f"must be a finite number > 0, got {value}")
        if self.output is not None:
            check_writable(self.output)

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]

    def output_for(self, stem: str) -> Path:
        """--output, else `stem` (made safe as a file name) with the format's suffix, checked writable."""
        if self.output is not None:
            return self.output
        path = Path(re.sub(r"[^\w.@-]+", "_", stem) + self.suffix)
        check_writable(path)
        return path


def int8_path(path: Path) -> Path:
    """digits-v1.onnx -> digits-v1.int8.onnx, next to it."""
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def check_writable(path: Path, flag: str = "--output") -> None:
    """Bad input unless a file can be created at `path`: found before the expensive work, not after it.

    Its directory must exist (nothing is created on a typo) and accept a file: a probe file is created
    there and removed, which also catches read-only mounts that permission bits do not show.
    """
    if path.is_dir():
        raise ConfigError(flag, f"'{path}' is a directory; give a file name")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigError(flag, f"cannot write '{path}': '{directory}' {problem}")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".kdsweep-probe-"):
            pass
    except OSError as error:
        raise ConfigError(flag, f"cannot write in '{directory}' ({error.strerror or error})") from None
