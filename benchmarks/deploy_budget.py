"""The deploy budget on the default space: how steady the sweep's latency figures are, and what compute it saves.

(1) Steadiness: the sweep's own latency stage (kdsweep.sweep.cost_stage: one Ray task, one CPU, serial over
the space's student architectures, nothing cached) run `--repeats` times; per architecture the min, max
and relative spread (max - min) / min of the figures a sweep would have used.

(2) Compute: the trial-epochs the default space's random search plans (searcher.seed, its draws, a scratch
baseline per new student, budget.epochs each, as with scheduler none: ASHA's cuts depend on results) without
a budget and with `--max-latency-ms`, and how many of the unbudgeted ones train students over it.

    python benchmarks/deploy_budget.py                       # ~1-3 min on 2 CPU cores
    python benchmarks/deploy_budget.py --repeats 5 --max-latency-ms 0.12
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import ray

from kdsweep.config import load_config
from kdsweep.data import load_dataset
from kdsweep.feasibility import Feasibility, architecture_of
from kdsweep.models import ModelCost
from kdsweep.space import trial_template, tune_param_space
from kdsweep.sweep.baselines import drawn_points, trial_config, with_baselines
from kdsweep.sweep.cost_stage import cost_stage


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-latency-ms", type=float, nargs="+", default=[0.12, 0.035])
    return p.parse_args()


def main() -> None:
    args = parse_args()
    config = load_config()
    data = load_dataset(config.data)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads per trial 1")
    runs, seconds = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        runs.append(cost_stage(config, data, cached={}))
        seconds.append(time.perf_counter() - started)
    print(f"latency stage: {args.repeats} runs, {min(seconds):.1f}-{max(seconds):.1f} s each")
    print("| student | params | FLOPs | latency ms, 5 runs (median) | min | max | spread (max-min)/min |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arch, cost in runs[0].costs.items():
        figures = [run.costs[arch].latency_ms for run in runs]
        low, high = min(figures), max(figures)
        print(
            f"| {arch.name} | {cost.params:,} | {cost.flops:,} | {statistics.median(figures):.4f} | {low:.4f} | "
            f"{high:.4f} | {(high - low) / low:.0%} |"
        )
    median = {arch: statistics.median(run.costs[arch].latency_ms for run in runs) for arch in runs[0].costs}
    costs = {arch: ModelCost(cost.params, cost.flops, median[arch]) for arch, cost in runs[0].costs.items()}
    compute(config, data.digest, costs, args.max_latency_ms)


def compute(config, digest: str, costs, limits: list[float]) -> None:
    template, epochs = trial_template(config), config.budget.epochs
    space, samples, seed = tune_param_space(config), config.budget.num_samples, config.searcher.seed

    def planned(points) -> tuple[int, list]:
        trials = with_baselines(points, template, digest, set())
        return len(trials) * epochs, [architecture_of(trial_config(template, p)) for p in trials]

    free = drawn_points(space, samples, seed).points
    free_epochs, free_archs = planned(free)
    print(f"\nseed {seed}, {samples} samples x {epochs} epochs, a scratch baseline per new student, no early stop")
    print("| max_latency_ms | trial-epochs without budget | of them over budget | with budget | skipped draws |")
    print("|---:|---:|---:|---:|---:|")
    for limit in limits:
        feasibility = Feasibility(template.trial, costs, config.deploy.model_copy(update={"max_latency_ms": limit}))
        draws = drawn_points(space, samples, seed, lambda p, fits=feasibility: not fits.violations(p))
        over = sum(costs[arch].latency_ms > limit for arch in free_archs) * epochs
        budgeted, _ = planned(draws.points)
        print(f"| {limit} | {free_epochs} | {over} | {budgeted} | {len(draws.skipped)} |")


if __name__ == "__main__":
    main()
