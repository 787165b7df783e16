"""Tune's trials as the sweep ended them -> the leaderboard's rows (config, metrics, outcome, node, MLflow run)."""

from __future__ import annotations

import math

from kdsweep.config import SweepConfig
from kdsweep.leaderboard import Row, rank_rows
from kdsweep.outcome import ending_reason, outcome_of, trial_error
from kdsweep.space import TrialTemplate
from kdsweep.sweep.baselines import is_baseline, trial_config


def leaderboard_rows(
    trials,
    template: TrialTemplate,
    config: SweepConfig,
    lacking: dict[str, str] | None = None,
    run_ids: dict[str, str] | None = None,
) -> list[Row]:
    """Tune's trials as rows (config, metrics, outcome, node, MLflow run, what MLflow lacks), best first;
    `template`: the sweep's, which its Tune configs are read with; `run_ids`: each trial's MLflow run as the
    driver found it (a trial's last report lacks it when its run was not open yet)."""
    rows = []
    for trial in trials:
        metrics = dict(trial.last_result or {})
        outcome = outcome_of(trial, config.budget.epochs)
        rows.append(
            Row(
                trial_id=trial.trial_id,
                role="baseline" if is_baseline(trial.config or {}) else "trial",
                status=outcome,
                error=trial_error(trial) or ending_reason(metrics),
                # What the sweep chose for this trial (fixed and sampled), validated; defaults stay implicit.
                config=trial_config(template, trial.config or {}).model_dump(exclude_unset=True),
                metrics={  # finite numbers only: a diverged trial's NaN losses are no result
                    k: v
                    for k, v in metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                },
                node_id=metrics.get("node_id"),
                mlflow_run_id=metrics.get("mlflow_run_id") or (run_ids or {}).get(trial.trial_id),
                not_in_mlflow=(lacking or {}).get(trial.trial_id),
                path=trial.local_path,
            )
        )
    return rank_rows(rows, config.objectives[0])
