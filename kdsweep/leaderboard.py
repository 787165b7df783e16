"""The leaderboard: one row per trial, ranked by the objective; one formatter for the sweep and `select`.

A row is a `Row` wherever it travels (built from Tune's trials by the sweep, from MLflow's runs by
selection); it becomes a dict only in the `--output-json` file (`write_json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from kdsweep.confidence import binomial_se
from kdsweep.config import Objective, SweepConfig
from kdsweep.configurations import SeedStats, configurations, rank_configurations, seed_stats, verdict
from kdsweep.outcome import Outcome
from kdsweep.selection import TrialRun
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
    "val_acc±SE",
    "seeds",
    "seed_mean±95%",
    "kd_gain",
    "gap_closed",
    "f1",
    "params",
    "ms",
    "status",
]
# Beside the fp32 figures when some student was measured at int8 (kdsweep.sweep.int8_stage), before status.
INT8_COLUMNS = {
    "acc_int8": ("val_accuracy_int8", ".4f"),
    "ms_int8": ("latency_ms_int8", ".2f"),
    "agree": ("int8_agreement", ".2%"),
}


@dataclass(frozen=True)
class VsScratch:
    """A distillation trial against its scratch baseline (kdsweep.sweep.baselines): at `epoch`, or why not (`note`)."""

    epoch: int | None = None  # None: no comparison, `note` says why
    baseline_val_accuracy: float | None = None  # the baseline's, at that epoch
    teacher_val_accuracy: float | None = None
    note: str | None = None  # also set with a comparison that has no gap_closed (a teacher no better than scratch)

    def to_json(self) -> dict[str, Any]:
        return {"note": self.note} if self.epoch is None else asdict(self)


@dataclass(kw_only=True)
class Row:
    """One trial on the leaderboard. Built from Tune's trials by the sweep (kdsweep.sweep.rows), or from a
    sweep's MLflow runs (`leaderboard_of`): those have no trial id, node or path."""

    trial_id: str | None = None  # Tune's
    role: Literal["trial", "baseline"] = "trial"  # baseline: the student trained without the teacher
    status: Outcome | str  # a str only for a run read from MLflow that is still open (its MLflow status)
    error: str | None = None  # why it failed, diverged or collapsed
    config: dict[str, Any]  # what the sweep chose for it (from MLflow: its params, as strings)
    metrics: dict[str, float]  # its last report, finite numbers only; kd_gain and gap_closed once compared
    node_id: str | None = None
    mlflow_run_id: str | None = None
    not_in_mlflow: str | None = None  # what its MLflow run lacks (the tracking server stayed away)
    path: str | None = None  # the trial's folder in Tune's storage
    rank: int = 0  # 1 is the best
    vs_scratch: VsScratch | None = None  # a distillation trial's comparison with its baseline
    champion: bool | None = None  # set on every row once the sweep has selected a champion
    seeds: SeedStats | None = None  # its configuration's figures over its seeds (kdsweep.configurations)
    # Shown in the table, not part of the JSON: what only a row read from MLflow has.
    run_name: str | None = None  # the table's "run" (else the trial id)
    no_model: bool = False  # finished without a logged model: shown as "FINISHED (no model)"

    def to_json(self) -> dict[str, Any]:
        """The row as `--output-json` writes it (benchmarks read these keys): vs_scratch, seeds and champion only
        when set."""
        out = {
            "trial_id": self.trial_id,
            "role": self.role,
            "status": str(self.status),
            "error": self.error,
            "config": self.config,
            "metrics": self.metrics,
            "node_id": self.node_id,
            "mlflow_run_id": self.mlflow_run_id,
            "not_in_mlflow": self.not_in_mlflow,
            "path": self.path,
            "rank": self.rank,
        }
        if self.vs_scratch is not None:
            out["vs_scratch"] = self.vs_scratch.to_json()
        if self.seeds is not None:
            out["seeds"] = self.seeds.to_json()
        if self.champion is not None:
            out["champion"] = self.champion
        return out


def rank_rows(rows: list[Row], objective: Objective) -> list[Row]:
    """The rows best first (by outcome, then the objective), each with its rank."""

    def key(row: Row) -> tuple:
        value = row.metrics.get(objective.metric, math.nan)
        value = -math.inf if math.isnan(value) else (value if objective.mode == "max" else -value)
        return (STATUS_ORDER[Outcome(row.status)], -value)

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row.rank = rank
    return rows


def as_trial_run(row: Row) -> TrialRun:
    """The row as selection sees a run (params as strings), to group rows from Tune by configuration."""
    params = {name: str(value) for name, value in row.config.items()}
    run_id = row.trial_id or row.mlflow_run_id or ""
    scratch = row.role == "baseline"
    return TrialRun(run_id, row.run_name or run_id, str(row.status), params, row.metrics, None, row.error, scratch)


def add_seed_stats(rows: list[Row], metric: str) -> list[Row]:
    """Each row gets its configuration's figures over its seeds (once kd_gain is in its metrics)."""
    runs = [as_trial_run(row) for row in rows]
    stats = seed_stats(runs, metric)
    for row, run in zip(rows, runs, strict=True):
        row.seeds = stats.get(run.run_id)
    return rows


def format_leaderboard(rows: list[Row], markdown: bool = False, val_size: int | None = None) -> str:
    """Rows with rank, run, config, metrics, status and error; `config` values may be typed (from Tune)
    or strings (MLflow params). Each failed trial's error goes right under its line (in markdown, in
    its status cell). `val_size`: the validation split's images, for each accuracy's standard error."""
    int8 = any(INT8_COLUMNS["acc_int8"][0] in row.metrics for row in rows)
    columns = [*COLUMNS[:-1], *INT8_COLUMNS, COLUMNS[-1]] if int8 else COLUMNS
    lines = [_cells(row, val_size, int8) for row in rows]
    if markdown:
        return _markdown(rows, lines, columns)
    table = [columns, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    out = [text[0], "-" * len(text[0])]
    said: set[str] = set()  # a note shared by many rows (a teacher no better than scratch) is said once
    for row, line in zip(rows, text[1:], strict=True):
        out.append(line)
        if row.error:
            out.append(f"      error: {row.error}")
        if row.not_in_mlflow:
            out.append(f"      not in MLflow: {row.not_in_mlflow}")
        note = row.vs_scratch.note if row.vs_scratch else None
        if note and note not in said:
            said.add(note)
            out.append(f"      vs scratch: {note}")
    return "\n".join(out)


def leaderboard_of(
    ranked: list[TrialRun], metric: str = "val_accuracy", markdown: bool = False, val_size: int | None = None
) -> str:
    """The table of a sweep's runs as read back from MLflow (kdsweep.sweep_record), in their order, each with
    its configuration's figures over seeds of `metric`."""
    stats = seed_stats(ranked, metric)
    rows = [
        Row(
            rank=position,
            run_name=run.name,
            role="baseline" if run.baseline else "trial",
            config=run.params,
            metrics=run.metrics,
            status=run.outcome,
            no_model=run.outcome == Outcome.FINISHED and not run.model_uri,
            error=run.error,
            mlflow_run_id=run.run_id,
            seeds=stats.get(run.run_id),
        )
        for position, run in enumerate(ranked, 1)
    ]
    return format_leaderboard(rows, markdown, val_size)


def _markdown(rows: list[Row], lines: list[list[str]], columns: list[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row, cells in zip(rows, lines, strict=True):
        if row.error:
            cells[-1] += f": {row.error}"
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(out)


def _cells(row: Row, val_size: int | None, int8: bool = False) -> list[str]:
    config, metrics = row.config, row.metrics

    def value(name: str) -> Any:  # a trial parameter the sweep left at its default has TrialConfig's
        return config.get(name, TrialConfig.model_fields[name].default)

    width = value("width")
    student = str(value("student")) + (f"(w{width})" if width not in (None, "None") else "")
    scratch = row.role == "baseline"
    return [
        str(row.rank),
        str(row.run_name or row.trial_id),
        student,
        "-" if scratch else str(value("teacher") or "-"),
        "-" if scratch else _number(value("temperature"), ".2f"),
        "-" if scratch else _number(value("alpha"), ".2f"),
        "scratch" if scratch else str(value("loss")),
        _number(metrics.get("val_accuracy"), ".4f") + _standard_error(metrics.get("val_accuracy"), val_size),
        _seeds(row.seeds),
        _seed_mean(row.seeds),
        _number(metrics.get("kd_gain"), "+.4f") + _at_epoch(row),
        _number(metrics.get("gap_closed"), ".2f"),
        _number(metrics.get("val_macro_f1"), ".4f"),
        _number(metrics.get("params"), ",.0f"),
        _number(metrics.get("latency_ms"), ".2f"),
        *([_number(metrics.get(metric), spec) for metric, spec in INT8_COLUMNS.values()] if int8 else []),
        str(row.status) + (" (no model)" if row.no_model else ""),
    ]


def _standard_error(accuracy: float | None, val_size: int | None) -> str:
    return f"±{binomial_se(accuracy, val_size):.4f}" if accuracy is not None and val_size else ""


def _seeds(stats: SeedStats | None) -> str:
    return "-" if stats is None else f"{stats.value.n}" + (" confirmed" if stats.confirmed else "")


def _seed_mean(stats: SeedStats | None) -> str:
    """The configuration's mean over its seeds, with its 95% interval's half width (one seed: the value alone)."""
    if stats is None:
        return "-"
    value = stats.value
    return f"{value.mean:.4f}" + ("" if value.half_width is None else f"±{value.half_width:.4f}")


def _at_epoch(row: Row) -> str:
    """The epoch a trial was compared with its baseline at, when it stopped before its last."""
    compared = row.vs_scratch.epoch if row.vs_scratch else None
    return f"@{compared}" if compared and str(compared) != str(row.config.get("epochs")) else ""


def _number(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def print_leaderboard(rows: list[Row], config: SweepConfig, val_size: int) -> None:
    """The table, then the verdict: did distillation pay, for which student, by how much, how sure."""
    objective = config.objectives[0]
    counts = {s: sum(r.status == s for r in rows) for s in Outcome}
    interrupted = f", {counts[Outcome.INTERRUPTED]} interrupted" if counts[Outcome.INTERRUPTED] else ""
    print(
        f"\nleaderboard ({objective.metric}, {objective.mode}; {counts[Outcome.FINISHED]} finished, "
        f"{counts[Outcome.STOPPED]} stopped early, {counts[Outcome.COLLAPSED]} collapsed to chance, "
        f"{counts[Outcome.DIVERGED]} diverged, "
        f"{counts[Outcome.ERROR]} failed{interrupted})"
    )
    print(format_leaderboard(rows, val_size=val_size))
    ranked = rank_configurations(configurations([as_trial_run(row) for row in rows]), objective.metric, objective.mode)
    print(verdict(ranked, objective.metric, val_size))


def write_json(rows: list[Row], path: str) -> None:
    """The rows as dicts: the one place a row is one (`Row.to_json`)."""
    with open(path, "w") as handle:
        json.dump([row.to_json() for row in rows], handle, indent=2, default=str)
