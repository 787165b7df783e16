"""SweepConfig.search -> what Ray Tune samples: a param_space for random/grid, a define-by-run for Optuna.

Conditional parameters (`when:`) are never sampled where they mean nothing: random search draws
them (with the searcher's seed, as every other domain) after their condition's value is known;
Optuna's define-by-run space asks for them only on the branch where they exist, so TPE models them
on that branch alone.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.search.sample import Domain
from ray.tune.search.variant_generator import RecursiveDependencyError

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


class Conditional(Domain):
    """A parameter drawn only where its `when:` holds, and None elsewhere (`sampled` drops it).

    Not `tune.sample_from`: Tune calls such a function without the searcher's random_state, so its
    draws ignore `searcher.seed`. A Domain's `sample` gets it, as every other domain's does. Tune
    hands it the experiment's spec, the trial's config under "config", partly drawn: a `when:` key
    not drawn yet raises RecursiveDependencyError, and Tune comes back to this one after the others.
    A class, not a closure: Tune pickles the param_space with its experiment state for --resume.
    """

    def __init__(self, param: Param) -> None:
        self.param = param
        self.inner = _tune_domain(param)

    def sample(self, config=None, size: int = 1, random_state=None) -> Any:
        spec = config or {}
        trial = spec["config"] if isinstance(spec.get("config"), dict) else spec
        chosen = {}
        for key in self.param.when or {}:
            value = dict.get(trial, key)  # the raw value: still a Domain (or a grid) until Tune draws it
            if isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value):
                raise RecursiveDependencyError(f"'{key}' is not drawn yet")
            chosen[key] = value
        return self.inner.sample(random_state=random_state) if self.param.condition_holds(chosen) else None

    def is_valid(self, value: Any) -> bool:
        return value is None or self.inner.is_valid(value)

    @property
    def domain_str(self) -> str:
        return f"{self.inner.domain_str} when {self.param.when}"


def tune_param_space(config: SweepConfig) -> dict[str, Any]:
    """Random/grid search: Tune domains, conditional ones drawn after the keys they depend on."""
    return {name: Conditional(param) if param.when else _tune_domain(param) for name, param in config.search.items()}


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
