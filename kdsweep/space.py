"""SweepConfig.search -> what Ray Tune samples (a param_space for random/grid, a define-by-run for Optuna),
and what Tune sampled -> the trial's TrialConfig.

Conditional parameters (`when:`) never reach a trial where they mean nothing. Optuna's define-by-run
space asks for them only on the branch where they exist, so TPE models them on that branch alone.
Random search draws every parameter, as plain Tune domains, and `TrialTemplate.trial` drops the
conditional ones whose condition does not hold: the same distribution as drawing them only where
they apply, reproducible from `searcher.seed`, and stored once in Tune's experiment state (a
`tune.sample_from` function would be called again when a trial is restored, and draw anew).
(A sweep's Tune configs may also stand for scratch baselines: kdsweep.sweep.baselines.trial_config.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune

from kdsweep.config import Param, SweepConfig
from kdsweep.trial import TrialConfig


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
            if value is not None and (name not in self.search or self.search[name].condition_holds(sampled))
        }
        return TrialConfig.model_validate({**self.base, **applies, **extra})


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
