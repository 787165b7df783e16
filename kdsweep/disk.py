"""A directory a command is about to write (Tune's storage, the folder of ./mlflow.db): checked before
anything runs, so that an unwritable or full disk is one line of bad input, not a failure mid-sweep."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kdsweep.errors import ConfigError

# A sweep writes a checkpoint per trial per epoch and a model per finished trial: refuse a disk with
# less room than this, rather than fail part-way with "No space left on device".
MIN_FREE_MB = 100


def check_writable_dir(field: str, path: str | Path, what: str, min_free_mb: int = MIN_FREE_MB) -> None:
    """ConfigError naming `field` unless `path` is (or can be made) a directory this process can write,
    on a disk with `min_free_mb` free. Creates nothing: a missing directory is judged by the nearest
    existing folder above it, where it would be made. `what` says what goes there, for the message."""
    path = Path(path).resolve()
    existing = path
    while not existing.exists():  # also false below a regular file (file/sub): the loop stops at the file
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is below {existing}, which is a file"
        raise ConfigError(field, f"{path} (for {what}) {where}, not a directory")
    try:  # really write, rather than ask os.access: root passes the permission checks, not a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(field, f"cannot write {what} in {existing} ({error.strerror or error})") from None
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            field, f"only {free_mb:.0f} MB free for {what} on the disk of {existing}; at least {min_free_mb} MB needed"
        )
