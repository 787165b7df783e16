"""The leaderboard: one row per trial, ranked by the objective; one formatter for the sweep and `select`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from kdsweep.config import Objective, SweepConfig
from kdsweep.outcome import Outcome
from kdsweep.trial import TrialConfig

STATUS_ORDER = {
    Outcome.FINISHED: 0,
    Outcome.STOPPED: 1,
    Outcome.INTERRUPTED: 2,
    Outcome.COLLAPSED: 3,
    Outcome.DIVERGED: 4,
    Outcome.ERROR: 5,
}
COLUMNS = [
    "rank",
    "run",
    "student",
    "teacher",
    "T",
    "alpha",
    "loss",
    "val_acc",
    "kd_gain",
    "gap_closed",
    "f1",
    "params",
    "ms",
    "status",
]


def rank_rows(rows: list[dict[str, Any]], objective: Objective) -> list[dict[str, Any]]:
    """The rows best first (by outcome, then the objective), each with its rank."""

    def key(row: dict[str, Any]) -> tuple:
        value = row["metrics"].get(objective.metric, math.nan)
        value = -math.inf if math.isnan(value) else (value if objective.mode == "max" else -value)
        return (STATUS_ORDER[Outcome(row["status"])], -value)

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def format_leaderboard(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Rows with rank, run, config, metrics, status and error; `config` values may be typed (from Tune)
    or strings (MLflow params). Each failed trial's error goes right under its line (in markdown, in
    its status cell)."""
    lines = [_cells(row) for row in rows]
    if markdown:
        return _markdown(rows, lines)
    table = [COLUMNS, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    out = [text[0], "-" * len(text[0])]
    said: set[str] = set()  # a note shared by many rows (a teacher no better than scratch) is said once
    for row, line in zip(rows, text[1:], strict=True):
        out.append(line)
        if row.get("error"):
            out.append(f"      error: {row['error']}")
        if row.get("not_in_mlflow"):
            out.append(f"      not in MLflow: {row['not_in_mlflow']}")
        note = (row.get("vs_scratch") or {}).get("note")
        if note and note not in said:
            said.add(note)
            out.append(f"      vs scratch: {note}")
    return "\n".join(out)


def _markdown(rows: list[dict[str, Any]], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row, cells in zip(rows, lines, strict=True):
        if row.get("error"):
            cells[-1] += f": {row['error']}"
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(out)


def _cells(row: Mapping[str, Any]) -> list[str]:
    config, metrics = row["config"], row["metrics"]

    def value(name: str) -> Any:  # a trial parameter the sweep left at its default has TrialConfig's
        return config.get(name, TrialConfig.model_fields[name].default)

    width = value("width")
    student = str(value("student")) + (f"(w{width})" if width not in (None, "None") else "")
    scratch = row.get("role") == "baseline"
    return [
        str(row["rank"]),
        str(row["run"]),
        student,
        "-" if scratch else str(value("teacher") or "-"),
        "-" if scratch else _number(value("temperature"), ".2f"),
        "-" if scratch else _number(value("alpha"), ".2f"),
        "scratch" if scratch else str(value("loss")),
        _number(metrics.get("val_accuracy"), ".4f"),
        _number(metrics.get("kd_gain"), "+.4f") + _at_epoch(row),
        _number(metrics.get("gap_closed"), ".2f"),
        _number(metrics.get("val_macro_f1"), ".4f"),
        _number(metrics.get("params"), ",.0f"),
        _number(metrics.get("latency_ms"), ".2f"),
        str(row["status"]),
    ]


def _at_epoch(row: Mapping[str, Any]) -> str:
    """The epoch a trial was compared with its baseline at, when it stopped before its last."""
    compared = (row.get("vs_scratch") or {}).get("epoch")
    return f"@{compared}" if compared and str(compared) != str(row["config"].get("epochs")) else ""


def _number(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def print_leaderboard(rows: list[dict[str, Any]], config: SweepConfig) -> None:
    objective = config.objectives[0]
    counts = {s: sum(r["status"] == s for r in rows) for s in Outcome}
    interrupted = f", {counts[Outcome.INTERRUPTED]} interrupted" if counts[Outcome.INTERRUPTED] else ""
    print(
        f"\nleaderboard ({objective.metric}, {objective.mode}; {counts[Outcome.FINISHED]} finished, "
        f"{counts[Outcome.STOPPED]} stopped early, {counts[Outcome.COLLAPSED]} collapsed to chance, "
        f"{counts[Outcome.DIVERGED]} diverged, "
        f"{counts[Outcome.ERROR]} failed{interrupted})"
    )
    print(format_leaderboard([{**row, "run": row["trial_id"]} for row in rows]))


def write_json(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w") as handle:
        json.dump(rows, handle, indent=2, default=str)
