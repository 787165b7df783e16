"""The processes a test left behind, found through /proc (no psutil in the project)."""

from __future__ import annotations

import os
from pathlib import Path


def servers_of(folder: Path) -> list[int]:
    """Pids of the running MLflow processes of `folder`'s ./mlflow.db: `mlflow server` names the database
    in its command line, the uvicorn worker it starts gets it in its environment."""
    database = str(folder / "mlflow.db").encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        command = _reads(proc / "cmdline")
        if b"mlflow" in command and (database in command or database in _reads(proc / "environ")):
            found.append(int(proc.name))
    return found


def parent_of(pid: int) -> int | None:
    stat = _reads(Path(f"/proc/{pid}/stat"))
    return int(stat.rsplit(b")", 1)[1].split()[1]) if stat else None


def running(pid: int) -> bool:
    """Some thread of it is alive, not a zombie: a killed process whose parent has not reaped it holds
    no port and no file, once all its threads have ended (its main thread may end first)."""
    states = [_reads(stat).rsplit(b")", 1)[-1].split()[:1] for stat in Path(f"/proc/{pid}/task").glob("*/stat")]
    return any(state and state[0] not in (b"Z", b"X") for state in states)


def holding(path: Path) -> list[int]:
    """Pids of other processes than this one with `path` open (the database a server's worker keeps open)."""
    target = str(path)
    found = {int(fd.parts[2]) for fd in Path("/proc").glob("[0-9]*/fd/*") if _link(fd) == target}
    return sorted(found - {os.getpid()})


def listening_on(port: int) -> list[int]:
    """Pids with a TCP socket listening on `port` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _reads(Path(table)).decode().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    return sorted({int(fd.parts[2]) for fd in Path("/proc").glob("[0-9]*/fd/*") if _link(fd) in inodes})


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile, or is not ours to read
        return b""


def _link(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:
        return ""
