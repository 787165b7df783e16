"""Where a sweep's private MLflow server answers now, for every process of the sweep.

The driver restarts a private server that died (tracking/server.py), on its port when that is free,
else on another, and publishes each start under the address the server first had, which is the one
every trial was given. A client whose call failed looks there: it follows a new address, and a new
start tells it that the server is back, worth trying again now rather than after its back-off.

Published in Ray's key-value store (`ray.experimental.internal_kv`, what Ray's own libraries keep
their small shared state in): every process of a sweep, on any node, already talks to it; it needs
no process of its own (a named actor would hold a worker on two busy cores); and nothing is pickled
into the trials. A file next to the store would be out of reach of a cluster's other nodes. A process
not connected to Ray (a command such as `kdsweep.select`) publishes and finds nothing.
"""

from __future__ import annotations

import json
import sys

from mlflow.tracking import MlflowClient

NAMESPACE = "kdsweep"


def publish(first_url: str, url: str, start: int) -> None:
    """The server first started at `first_url` answers at `url` since its `start`th start (1, 2, ...)."""
    kv = _kv()
    if kv:
        kv._internal_kv_put(_key(first_url), json.dumps([url, start]), namespace=NAMESPACE)


def withdraw(first_url: str) -> None:
    """The server is stopped for good: a later server given the same port must not be taken for it."""
    kv = _kv()
    if kv:
        kv._internal_kv_del(_key(first_url), namespace=NAMESPACE)


def lookup(first_url: str) -> tuple[str, int] | None:
    """(where the server first started at `first_url` answers now, its start), or None when unpublished."""
    kv = _kv()
    found = kv._internal_kv_get(_key(first_url), namespace=NAMESPACE) if kv else None
    if not found:
        return None
    url, start = json.loads(found)
    return url, start


class ServerAddress:
    """A client's view of its tracking server: `url`, a `client` for it, and `moved()` after a failure.

    A server nobody publishes (a user's own, or a sqlite store) never moves: its URI stays.
    """

    def __init__(self, first_url: str) -> None:
        self.first_url = self.url = first_url
        self.start: int | None = None
        self.client = MlflowClient(first_url)
        self.moved()  # a trial that starts after a restart goes straight to the current server

    def moved(self) -> bool:
        """True when the server was restarted (or moved) since this was last asked: `url` and
        `client` then point to where it answers now."""
        published = lookup(self.first_url)
        if published is None:
            return False
        url, start = published
        restarted = (self.start is not None and start != self.start) or url != self.url
        if url != self.url:
            self.url, self.client = url, MlflowClient(url)
            _forget_artifact_repositories()
        self.start = start
        return restarted

    def current(self) -> str:
        """Where the server answers now."""
        self.moved()
        return self.url


def _forget_artifact_repositories() -> None:
    """MLflow keeps each run's artifact repository, which names the server it uploads through, for the
    life of the process (a private cache: it has no public way to clear it); after a move, a run's
    artifacts (a model, a figure) would go on to the old address."""
    from mlflow.tracking._tracking_service import utils

    getattr(utils, "_artifact_repos_cache", {}).clear()


def _key(first_url: str) -> str:
    return f"tracking-server:{first_url}"


def _kv():
    """Ray's key-value store, when this process is connected to Ray (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    from ray.experimental import internal_kv

    return internal_kv if internal_kv._internal_kv_initialized() else None
