"""What a cluster can place: refuse trials no node could ever run, accept what an autoscaler will provide.

A trial (or the teacher stage) runs on ONE node, so it must fit the resources of one node type. On an
autoscaling cluster (`ray up`, or Ray's fake_multinode provider) the node types come from the
autoscaler's own config: a GPU worker type with `min_workers: 0` has no node yet, and Ray's current
resources show no GPU, but a trial asking for one is fine, and submitting it is what makes the
autoscaler add that node. On a fixed cluster the node types are the nodes there are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from kdsweep.config import SweepConfig
from kdsweep.errors import ConfigError

# Where `ray up` leaves the autoscaler's config on the head node.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    launched_on_demand: bool  # an autoscaler adds such nodes when work asks for them
    node_id: str | None = None  # a node that exists (a fixed cluster's), to send work to it alone

    def fits(self, request: dict[str, float]) -> bool:
        return all(self.resources.get(key, 0) >= amount for key, amount in request.items() if amount > 0)

    def describe(self) -> str:
        shown = ", ".join(f"{key} {value:g}" for key, value in sorted(self.resources.items()) if key in ("CPU", "GPU"))
        return f"{self.name} ({shown or 'no CPU'}{', added on demand' if self.launched_on_demand else ''})"


def this_machine() -> list[NodeType]:
    """The embedded runtime's one node: this machine (checked before Ray starts)."""
    import torch

    return [NodeType("this machine", {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}, False)]


def cluster_node_types(ray) -> list[NodeType]:
    """The autoscaler's node types when the cluster has an autoscaler, else its alive nodes."""
    return node_types([node for node in ray.nodes() if node["Alive"]], autoscaler_config(ray))


def node_types(alive: list[dict], config: dict | None) -> list[NodeType]:
    """The node types of a cluster whose alive nodes are `alive` (as `ray.nodes()` gives them), run by an
    autoscaler with `config` (None: no autoscaler, the alive nodes are what there is)."""
    declared = config.get("available_node_types") or {} if config else {}
    if config is None or (len(declared) == 1 and not next(iter(declared.values())).get("resources")):
        # No autoscaler; or one node type, whose resources Ray detects on each machine (the local provider
        # of cluster-local.yaml: a CPU-only head and GPU workers are all of that type): each node as it is.
        return [NodeType(node["NodeManagerAddress"], dict(node["Resources"]), False, node["NodeID"]) for node in alive]
    head_type = config.get("head_node_type")
    head = next((n for n in alive if "node:__internal_head__" in n["Resources"]), None)
    types = []
    for name, spec in declared.items():
        resources = dict(spec.get("resources") or {})
        if name == head_type and not resources and head is not None:
            resources = dict(head["Resources"])  # `resources: {}`: Ray detected them on the head
        on_demand = name != head_type and int(spec.get("max_workers", config.get("max_workers", 0)) or 0) > 0
        if name == head_type or on_demand or int(spec.get("min_workers", 0) or 0) > 0:
            types.append(NodeType(name, resources, on_demand))
    return types


def autoscaler_config(ray) -> dict | None:
    """The config the running autoscaler uses: the file its process was started with (the driver runs
    on the head, where the autoscaler runs), else the one `ray up` leaves on the head; None without one."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    paths = []
    status = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    if status:
        pid = json.loads(status).get("monitor_pid")
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:  # the autoscaler runs on another machine
            arguments = []
        paths += [Path(a.split("=", 1)[1]) for a in arguments if a.startswith("--autoscaling-config=")]
    paths.append(BOOTSTRAP_CONFIG)
    for path in paths:
        path = path.expanduser()
        if path.is_file():
            return yaml.safe_load(path.read_text())
    return None


def check_resources(config: SweepConfig, node_types: list[NodeType]) -> None:
    """Bad input unless some node type can run one trial (its CPUs and GPUs on one node)."""
    cpus, gpus = config.resources.cpus_per_trial, config.resources.gpus_per_trial
    if any(node.fits({"CPU": cpus, "GPU": gpus}) for node in node_types):
        return
    known = "; ".join(node.describe() for node in node_types) or "none"
    if not any(node.fits({"CPU": cpus}) for node in node_types):
        raise ConfigError("resources.cpus_per_trial", f"{cpus:g} CPUs per trial, but no node has that many ({known})")
    raise ConfigError("resources.gpus_per_trial", f"{gpus:g} GPUs per trial, but no node can provide them ({known})")
