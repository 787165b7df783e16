"""SweepConfig.search -> what Ray Tune samples: a param_space for random/grid, a define-by-run for Optuna.

Conditional parameters (`when:`) are never sampled where they mean nothing: random search draws
them with `tune.sample_from` after their condition's value is known; Optuna's define-by-run space
asks for them only on the branch where they exist, so TPE models them on that branch alone.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from kdsweep.config import Param, SweepConfig


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


def _conditional(param: Param):
    domain = _tune_domain(param)

    def sample(config) -> Any:
        return domain.sample() if param.condition_holds(dict(config)) else None

    return tune.sample_from(sample)


def tune_param_space(config: SweepConfig) -> dict[str, Any]:
    """Random/grid search: Tune domains, conditional ones resolved after the keys they depend on."""
    return {name: _conditional(param) if param.when else _tune_domain(param) for name, param in config.search.items()}


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


def sampled(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config without the placeholders of conditional parameters that did not apply."""
    return {key: value for key, value in config.items() if value is not None}
