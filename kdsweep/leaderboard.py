"""The end of a sweep: one row per trial, ranked by the objective, printed and written as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

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
            "trial_id": metrics.get("trial_id") or (result.path or "").rsplit("_", 2)[-2:][0],
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


COLUMNS = [
    ("rank", "{:>4}"), ("student", "{:<20}"), ("T", "{:>5.2f}"), ("alpha", "{:>5.2f}"), ("loss", "{:<4}"),
    ("val_acc", "{:>7.4f}"), ("f1", "{:>6.4f}"), ("params", "{:>10,.0f}"), ("ms", "{:>6.2f}"), ("status", "{:<8}"),
]


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    c, m = row["config"], row["metrics"]
    return {
        "rank": row["rank"], "student": c.get("student", "?") + (f"(w{c['width']})" if c.get("width") else ""),
        "T": c.get("temperature", math.nan), "alpha": c.get("alpha", math.nan), "loss": c.get("loss", "kd"),
        "val_acc": m.get("val_accuracy", math.nan), "f1": m.get("val_macro_f1", math.nan),
        "params": m.get("params", math.nan), "ms": m.get("latency_ms", math.nan), "status": row["status"],
    }


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    widths = [len(fmt.format(0 if "d" in fmt or "f" in fmt else "")) for _, fmt in COLUMNS]
    header = "  ".join(name.rjust(w) if ">" in fmt else name.ljust(w) for (name, fmt), w in zip(COLUMNS, widths))
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = _cells(row)
        lines.append("  ".join(_cell(fmt, cells[name], w) for (name, fmt), w in zip(COLUMNS, widths)))
        if row["error"]:
            lines.append(f"      error: {row['error']}")
    return "\n".join(lines)


def _cell(fmt: str, value: Any, width: int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-".rjust(width)
    return fmt.format(value)


def print_leaderboard(rows: list[dict[str, Any]], config: SweepConfig) -> None:
    objective = config.objectives[0]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    print(f"\nleaderboard ({objective.metric}, {objective.mode}; {counts['FINISHED']} finished, "
          f"{counts['STOPPED']} stopped early, {counts['DIVERGED']} diverged, {counts['ERROR']} failed)")
    print(format_leaderboard(rows))


def write_json(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(rows, handle, indent=2, default=str)
