"""The end of a sweep: one row per trial, ranked by the objective, printed and written as JSON."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from kdsweep.config import SweepConfig
from kdsweep.space import sampled

STATUS_ORDER = {"FINISHED": 0, "STOPPED": 1, "DIVERGED": 2, "ERROR": 3}


def trial_status(metrics: dict[str, Any], error: Exception | None, epochs: int) -> str:
    """FINISHED ran the full budget; STOPPED was cut short by the scheduler (ASHA); DIVERGED hit a
    non-finite loss (its hyperparameters, not a crash); ERROR failed for good after its retries."""
    if error is not None:
        return "ERROR"
    if metrics.get("diverged"):
        return "DIVERGED"
    return "FINISHED" if metrics.get("epoch", 0) >= epochs else "STOPPED"


def leaderboard_rows(results, config: SweepConfig) -> list[dict[str, Any]]:
    objective = config.objectives[0]
    base = {k: v for k, v in config.trial_base().items() if k != "data"}
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        trial_config = {**base, **sampled(result.config or {})}
        rows.append({
            "trial_id": metrics.get("trial_id"),  # Tune fills it in even before a trial's first report
            "status": trial_status(metrics, result.error, config.budget.epochs),
            "error": None if result.error is None else str(result.error).strip().splitlines()[-1][:300],
            "config": trial_config,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            "node_id": metrics.get("node_id"),
            "mlflow_run_id": metrics.get("mlflow_run_id"),
            "path": result.path,
        })

    def key(row: dict[str, Any]) -> tuple:
        value = row["metrics"].get(objective.metric, math.nan)
        value = -math.inf if math.isnan(value) else (value if objective.mode == "max" else -value)
        return (STATUS_ORDER[row["status"]], -value)

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


COLUMNS = ["rank", "run", "student", "T", "alpha", "loss", "val_acc", "f1", "params", "ms", "status"]


def table_row(rank: int, run: str, config: Mapping[str, Any], metrics: Mapping[str, Any], status: str) -> list[str]:
    """One leaderboard line; `config` values may be typed (from Tune) or strings (MLflow params)."""
    width = config.get("width")
    student = str(config.get("student", "?")) + (f"(w{width})" if width not in (None, "None") else "")
    return [str(rank), run, student, _number(config.get("temperature"), ".2f"), _number(config.get("alpha"), ".2f"),
            str(config.get("loss", "kd")), _number(metrics.get("val_accuracy"), ".4f"),
            _number(metrics.get("val_macro_f1"), ".4f"), _number(metrics.get("params"), ",.0f"),
            _number(metrics.get("latency_ms"), ".2f"), status]


def format_table(lines: list[list[str]]) -> str:
    rows = [COLUMNS, *lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([text[0], "-" * len(text[0]), *text[1:]])


def _number(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    lines = [table_row(r["rank"], str(r["trial_id"]), r["config"], r["metrics"], r["status"]) for r in rows]
    text = format_table(lines).split("\n")
    out = text[:2]
    for row, line in zip(rows, text[2:]):  # each failed trial's error right under its line
        out.append(line)
        if row["error"]:
            out.append(f"      error: {row['error']}")
    return "\n".join(out)


def print_leaderboard(rows: list[dict[str, Any]], config: SweepConfig) -> None:
    objective = config.objectives[0]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    print(f"\nleaderboard ({objective.metric}, {objective.mode}; {counts['FINISHED']} finished, "
          f"{counts['STOPPED']} stopped early, {counts['DIVERGED']} diverged, {counts['ERROR']} failed)")
    print(format_leaderboard(rows))


def write_json(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(rows, handle, indent=2, default=str)
