"""Tune's OptunaSearch with the deploy budget as Optuna constraints: TPE learns where the feasible region is.

Every draw's constraint values (kdsweep.feasibility.constraint_values: <= 0 within a limit) are known when
it is drawn, before any training: they are set on the Optuna trial (`Trial.set_constraint`, what Optuna 5
reads in place of the deprecated `constraints_func`). A draw over the budget is told at once (PRUNED, no
value: TPE ranks infeasible trials below every feasible one, by their violation) and Optuna is asked
again under the same Tune trial id: it never takes a trial slot.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from kdsweep.feasibility import Feasibility, architecture_of

MAX_SKIPS_PER_TRIAL = 1000  # a space with a feasible student draws one long before this


class ConstrainedOptunaSearch(OptunaSearch):
    def __init__(self, feasibility: Feasibility, seed: int | None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self.feasibility = feasibility
        self.skipped: list[str] = []  # the architecture of each infeasible draw, in order

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(MAX_SKIPS_PER_TRIAL):
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            ot_trial = self._ot_trials[trial_id]
            for limit, value in self.feasibility.constraints(config).items():
                ot_trial.set_constraint(limit, value)
            violations = self.feasibility.violations(config)
            if not violations:
                return config
            del self._ot_trials[trial_id]
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            name = architecture_of(self.feasibility.to_trial(config)).name
            self.skipped.append(name)
            print(
                f"skipped an infeasible draw ({name}: {', '.join(violations)}); {len(self.skipped)} so far", flush=True
            )
        raise RuntimeError(f"{MAX_SKIPS_PER_TRIAL} infeasible draws in a row: the budget leaves Optuna nothing to try")
