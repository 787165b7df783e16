"""Before any trial (and before the teacher): each distinct student architecture's cost, in one place.

Params and FLOPs are counted on the driver. Latency is measured once per architecture, in the deploy
target (kdsweep.shipping.target), by one Ray task that Ray gives `deploy.threads` CPUs while nothing else
of the sweep runs, serially over the architectures: every figure of a sweep comes from the same place
under the same load, never from inside a trial sharing the machine with other trials. The figures are
cached in the sweep's MLflow experiment (one experiment tag per architecture, input shape and target),
so a later sweep of the experiment or --resume reuses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray
from mlflow import MlflowClient

from kdsweep.config import Deploy, SweepConfig, latency_measured
from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.feasibility import Architecture
from kdsweep.models import ModelCost, count_flops, count_params, create_model
from kdsweep.plugins import import_plugins
from kdsweep.shipping.errors import NotExportable
from kdsweep.shipping.quantize import calibration_batches
from kdsweep.shipping.target import target_latency_ms
from kdsweep.trial import TrialConfig

LATENCY_TAG = "kdsweep.latency"  # prefix of the experiment tags that cache latencies
MEASURE_SECONDS = 1.0  # per architecture, warm-up excluded: its spread is in benchmarks/RESULTS.md


@dataclass(frozen=True)
class CostTable:
    """Each architecture's cost, and what measuring the latencies cost this sweep."""

    costs: dict[Architecture, ModelCost]
    measured: dict[str, float]  # cache tag -> latency measured now (to cache in the experiment)
    seconds: float  # the latency task's wall time (0: all cached)

    def describe(self, deploy: Deploy) -> str:
        where = f"{deploy.runtime} {deploy.precision}, {deploy.threads} thread(s), batch 1"
        figures = ", ".join(f"{arch.name} {cost.latency_ms:.3f} ms" for arch, cost in self.costs.items())
        how = f"measured in {self.seconds:.1f} s" if self.measured else "cached in the experiment"
        return f"student latency ({where}; {how}): {figures}"


def architectures(config: SweepConfig) -> list[Architecture]:
    """Every distinct student architecture a trial of the space can have: each student with each width that
    applies to it (a conditional `width` only on its branch), sorted."""
    base = config.trial_base()
    student = config.search.get("student")
    students = student.values if student else [base.get("student", TrialConfig.model_fields["student"].default)]
    width = config.search.get("width")
    found = set()
    for name in students:
        if width is not None and width.condition_holds({"student": name}):
            widths = list(range(*width.values)) if width.domain == "randint" else width.values
        else:
            widths = [base.get("width")]
        found |= {Architecture(name, w) for w in widths}
    return sorted(found, key=lambda a: (a.student, a.width or 0))


def latency_tag(arch: Architecture, input_shape: tuple[int, ...], deploy: Deploy) -> str:
    shape = "x".join(str(n) for n in input_shape)
    return f"{LATENCY_TAG}.{arch.name}.{shape}.{deploy.runtime}.t{deploy.threads}.{deploy.precision}"


def measures_cost(config: SweepConfig) -> bool:
    """Whether the sweep needs the table: a budget to check, or trials that report their cost."""
    return config.deploy.has_budget or any(latency_measured(config))


def cached_latencies(store: str, experiment_name: str) -> dict[str, float]:
    """The experiment's cached latencies by tag (none when the experiment does not exist yet)."""
    experiment = MlflowClient(store).get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    return {key: float(value) for key, value in experiment.tags.items() if key.startswith(LATENCY_TAG + ".")}


def cache_latencies(client: MlflowClient, experiment_id: str, measured: dict[str, float]) -> None:
    for key, value in measured.items():
        client.set_experiment_tag(experiment_id, key, repr(value))


def cost_stage(config: SweepConfig, data: Dataset, cached: dict[str, float]) -> CostTable:
    """Every architecture of the space: params and FLOPs counted here, latencies from `cached` or measured
    now by one task (Ray must be started)."""
    deploy, shape = config.deploy, data.input_shape
    archs = architectures(config)
    tags = {arch: latency_tag(arch, shape, deploy) for arch in archs}
    missing = [arch for arch in archs if tags[arch] not in cached]
    started = time.perf_counter()
    measured: dict[str, float] = {}
    if missing:
        calibration = calibration_batches(data) if deploy.precision == "int8" else None
        task = _measure.options(num_cpus=deploy.threads)
        try:
            latencies = ray.get(task.remote(missing, data.num_classes, shape, deploy, calibration, config.plugins))
        except ray.exceptions.RayTaskError as error:  # a student the target cannot run
            if isinstance(error.cause, ConfigError):
                raise error.cause from None
            raise
        measured = {tags[arch]: latency for arch, latency in zip(missing, latencies, strict=True)}
    seconds = time.perf_counter() - started if missing else 0.0
    latency = {**cached, **measured}
    costs = {}
    for arch in archs:
        model = _model(arch, data.num_classes, shape)
        costs[arch] = ModelCost(count_params(model), count_flops(model, shape), latency[tags[arch]])
    return CostTable(costs, measured, seconds)


def _model(arch: Architecture, num_classes: int, input_shape: tuple[int, int, int]):
    return create_model(arch.student, num_classes, input_shape[0], input_shape[1], arch.width)


@ray.remote(max_retries=0)
def _measure(
    archs: list[Architecture],
    num_classes: int,
    input_shape: tuple[int, int, int],
    deploy: Deploy,
    calibration: list[np.ndarray] | None,
    plugins: list[str],
) -> list[float]:
    """Serially, so no two measurements share the task's CPUs."""
    import_plugins(plugins)
    latencies = []
    for arch in archs:
        model = _model(arch, num_classes, input_shape)
        try:
            latencies.append(target_latency_ms(model, input_shape, deploy, calibration, MEASURE_SECONDS))
        except NotExportable as error:
            raise ConfigError("deploy.runtime", f"{arch.name}: {error} (deploy.runtime: torch runs it)") from None
    return latencies
