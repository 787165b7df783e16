"""SweepConfig.search -> what Ray Tune samples (a param_space for random/grid, a define-by-run for Optuna),
and what Tune sampled -> the trial's TrialConfig.

Conditional parameters (`when:`) never reach a trial where they mean nothing. Optuna's define-by-run
space asks for them only on the branch where they exist, so TPE models them on that branch alone.
Random search draws every parameter, as plain Tune domains, and `TrialTemplate.trial` drops the
conditional ones whose condition does not hold: the same distribution as drawing them only where
they apply, reproducible from `searcher.seed`, and stored once in Tune's experiment state (a
`tune.sample_from` function would be called again when a trial is restored, and draw anew).

A baseline is a Tune config like any other, marked `baseline: true`: its trial is the same student
trained without the teacher (`TrialConfig.scratch`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ray import tune

from kdsweep.config import Param, SweepConfig
from kdsweep.trial import DISTILLATION_FIELDS, TrialConfig

BASELINE = "baseline"  # the Tune config key that marks a scratch baseline


def _tune_domain(param: Param):
    if param.domain == "choice":
        return tune.choice(param.values)
    if param.domain == "grid":
        return tune.grid_search(param.values)
    if param.domain == "uniform":
        return tune.uniform(*param.values)
    if param.domain == "loguniform":
        return tune.loguniform(*param.values)
    return tune.randint(*param.values)


def tune_param_space(config: SweepConfig) -> dict[str, Any]:
    """Random/grid search: a Tune domain per searched parameter, conditional ones included."""
    return {name: _tune_domain(param) for name, param in config.search.items()}


@dataclass(frozen=True)
class TrialTemplate:
    """What every trial of a sweep shares, and which searched parameters apply only under a condition."""

    base: dict[str, Any]  # fixed parameters and the epoch budget
    search: dict[str, Param]

    def trial(self, sampled: dict[str, Any], **extra: Any) -> TrialConfig:
        """The validated trial for what the searcher drew (conditional values that do not apply dropped)."""
        applies = {
            name: value
            for name, value in sampled.items()
            if name != BASELINE
            and value is not None
            and (name not in self.search or self.search[name].condition_holds(sampled))
        }
        config = TrialConfig.model_validate({**self.base, **applies, **extra})
        return config.scratch() if is_baseline(sampled) else config

    def baseline_point(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """The Tune config of the baseline of a sampled trial: the same student and training, no teacher.

        Every searched key is set (a searcher would otherwise sample, or expand a grid over, a missing
        one): the distillation ones to the scratch values, a training setting searched over a
        continuous range (lr, weight decay) to the middle of that range (geometric for loguniform), so
        that trials differing only in it share one baseline.
        """
        scratch = TrialConfig(alpha=0.0)
        point = dict(sampled)
        for name, param in self.search.items():
            if name in DISTILLATION_FIELDS:
                point[name] = getattr(scratch, name)
            elif param.domain == "uniform":
                point[name] = (param.values[0] + param.values[1]) / 2
            elif param.domain == "loguniform":
                point[name] = math.sqrt(param.values[0] * param.values[1])
        return {**point, BASELINE: True}

    def baseline_of(self, sampled: dict[str, Any]) -> TrialConfig:
        """The trial that is the sampled trial's baseline (a baseline's is itself)."""
        return self.trial(self.baseline_point(sampled))


def is_baseline(sampled: dict[str, Any]) -> bool:
    return bool(sampled.get(BASELINE))


def baseline_key(config: TrialConfig, data_digest: str) -> str:
    """Names one baseline: its training (threads and latency timing aside) on one dataset."""
    training = config.model_dump(exclude={"num_threads", "measure_latency"})
    return hashlib.sha256(json.dumps([training, data_digest], sort_keys=True).encode()).hexdigest()[:16]


def trial_template(config: SweepConfig) -> TrialTemplate:
    return TrialTemplate(config.trial_base(), dict(config.search))


class OptunaSpace:
    """Optuna define-by-run: unconditional parameters first, then those whose condition holds.

    A class, not a closure: Tune pickles the searcher with its experiment state for --resume.
    """

    def __init__(self, config: SweepConfig) -> None:
        self.ordered = sorted(config.search.items(), key=lambda item: item[1].when is not None)

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for name, param in self.ordered:
            if not param.condition_holds(chosen):
                continue
            if param.domain == "choice":
                chosen[name] = trial.suggest_categorical(name, param.values)
            elif param.domain == "uniform":
                chosen[name] = trial.suggest_float(name, *param.values)
            elif param.domain == "loguniform":
                chosen[name] = trial.suggest_float(name, *param.values, log=True)
            else:  # randint: high excluded, as in Tune
                chosen[name] = trial.suggest_int(name, param.values[0], param.values[1] - 1)
