"""Refuse trials the cluster can never place, instead of letting Tune wait for ever."""

from __future__ import annotations

from kdsweep.config import SweepConfig
from kdsweep.errors import ConfigError


def check_resources(config: SweepConfig, cluster: dict[str, float]) -> None:
    cpus, gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if config.resources.cpus_per_trial > cpus:
        raise ConfigError(
            "resources.cpus_per_trial", f"{config.resources.cpus_per_trial} but the cluster has {cpus:g} CPUs"
        )
    if config.resources.gpus_per_trial > gpus:
        raise ConfigError(
            "resources.gpus_per_trial", f"{config.resources.gpus_per_trial} but the cluster has {gpus:g} GPUs"
        )
