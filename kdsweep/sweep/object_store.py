"""Will the sweep's shared objects fit Ray's object store? Planned before any teacher trains.

A node that runs trials holds the dataset and the logit cache of every cached teacher those trials
read, at once: trials map them zero-copy, so they stay pinned while trials run. When they cannot all
fit, the caches hold fewer view epochs (views repeat sooner, as `teacher.cache_limit_mb` already
makes them); when not even one view epoch of each fits, the sweep is bad input, refused before it
trains anything.
"""

from __future__ import annotations

from kdsweep.errors import ConfigError
from kdsweep.teachers.cache import CacheSize

# The share of a node's object store the sweep plans to fill: the rest is left to Tune (results and
# checkpoints pass through it) and to the copies Ray makes while it moves objects between nodes.
USABLE_SHARE = 0.8


def plan_view_epochs(data_bytes: int, caches: dict[str, CacheSize], capacity: int) -> dict[str, int]:
    """View epochs per cache (by teacher name) so that the data and every cache fit `USABLE_SHARE` of
    `capacity` bytes: each as many as its own limit allows, cut to one common cap when they do not fit.

    Raises ConfigError when not even one view epoch of each fits.
    """
    usable = int(capacity * USABLE_SHARE)

    def total(cap: int) -> int:
        return data_bytes + sum(c.fixed + min(c.view_epochs, cap) * c.per_epoch for c in caches.values())

    most = max((c.view_epochs for c in caches.values()), default=0)
    cap = next((cap for cap in range(most, 0, -1) if total(cap) <= usable), 0)
    if caches and cap == 0:
        raise ConfigError(
            "teacher.cache_limit_mb",
            f"the dataset ({_mb(data_bytes)}) and one view epoch of each teacher cache ({_mb(total(1) - data_bytes)}) "
            f"exceed {USABLE_SHARE:.0%} of a node's Ray object store ({_mb(capacity)}): give Ray a larger one "
            "(ray start --object-store-memory, cluster.yaml), or a teacher.cache_limit_mb below one view epoch "
            "(teacher.mode online)",
        )
    return {name: min(c.view_epochs, cap) for name, c in caches.items()}


def describe_cut(data_bytes: int, caches: dict[str, CacheSize], planned: dict[str, int], capacity: int) -> str | None:
    """The one line that says the object store cut the caches short; None when it did not."""
    if all(planned[name] >= c.view_epochs for name, c in caches.items()):
        return None
    wanted = data_bytes + sum(c.bytes for c in caches.values())
    cap = max(planned.values())
    return (
        f"object store: the dataset and the teacher caches would take {_mb(wanted)}, more than {USABLE_SHARE:.0%} of "
        f"a node's object store ({_mb(capacity)}): each cache holds at most {cap} view epochs (views repeat every "
        f"{cap} epochs); give Ray a larger object store (ray start --object-store-memory) to keep them all"
    )


def node_object_store_bytes(ray) -> int:
    """The smallest object store of the cluster's alive nodes: objects live on a node, and the node that
    runs trials holds the data and the caches they read. Nodes an autoscaler adds later are not seen:
    cluster.yaml gives every node type the same size, so the head's stands in for them."""
    return min(int(node["Resources"]["object_store_memory"]) for node in ray.nodes() if node["Alive"])


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:.1f} KB"
