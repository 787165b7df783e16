"""The sweep's story on its parent run, as MLflow's UI shows it: metrics (the best value reached,
the trials by outcome, the champion's metrics), the run's description (markdown: the counts, the
champion, the leaderboard as a table) and the plots logged next to them.

Written at the end of a sweep, and again by `python -m kdsweep.select` when it registers another
champion; always from what MLflow holds, so a resumed sweep's summary counts every trial.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient

from kdsweep.confidence import Estimate, paid
from kdsweep.configurations import SCRATCH, configurations, describe_seeds, judged, rank_configurations, verdict
from kdsweep.leaderboard import leaderboard_of
from kdsweep.outcome import Outcome
from kdsweep.plots import PARETO_PLOT
from kdsweep.selection import TrialRun, rank
from kdsweep.sweep_record import sweep_runs, validation_size
from kdsweep.tracking.runs import TAG_SWEEP

if TYPE_CHECKING:  # only described here: choosing it is kdsweep.champion's job
    from kdsweep.champion import Champion

NOTE_TAG = "mlflow.note.content"  # a run's Description in MLflow's UI, rendered as markdown
NOTE_LIMIT = 8000  # MLflow's longest tag value: the leaderboard is cut to fit
CHAMPION_METRICS = (
    "val_accuracy",
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "kd_gain",
    "gap_closed",
    "params",
    "flops",
    "latency_ms",
    "val_accuracy_int8",
    "latency_ms_int8",
    "int8_agreement",
)
GAINS = ("kd_gain", "gap_closed")  # a distillation trial's, against its scratch baseline (kdsweep.gain)
# The plots a sweep logs on its parent, with what each shows; the description lists those present.
PLOTS = {
    PARETO_PLOT: "validation accuracy against latency (int8 figures for an int8 sweep), the front of accuracy, "
    "latency and size within the budget and the champion marked (its size and hypervolume: `pareto_size`, "
    "`pareto_hypervolume`)",
    # kdsweep.importance logs it on the parent before the summary is written (see sweep/run.py).
    "importance.png": "how much each searched parameter moved the objective (the numbers: `importance.json`)",
}


def summarise_sweep(
    uri: str, parent_run_id: str, metric: str, mode: str, champion: Champion | None, no_champion: str = ""
) -> None:
    """Log the summary metrics on the parent and set its description; `no_champion` says why there
    is none (selection skipped, nothing met the constraints)."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = rank(sweep_runs(client, parent), metric, mode)
    now = int(time.time() * 1000)
    metrics = summary_metrics(runs, metric, mode, champion)
    client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    logged = {artifact.path for artifact in client.list_artifacts(parent_run_id)}
    plots = [plot for plot in PLOTS if plot in logged]
    note = summary_note(parent, runs, metric, mode, champion, no_champion, plots, validation_size(parent))
    client.set_tag(parent_run_id, NOTE_TAG, note)


def summary_metrics(runs: list[TrialRun], metric: str, mode: str, champion: Champion | None) -> dict[str, float]:
    """trials_<outcome> for every outcome; best_<metric>: the best value any trial that finished or
    was stopped early reached at any epoch (its running best where logged, else its last value);
    champion_<metric> for the champion's validation, test and cost metrics; the champion's configuration over
    its seeds (champion_seeds, champion_confirmed, champion_scratch, champion_<metric>_mean/_low/_high) and the
    kd_gain that answers "did distillation pay" (kd_gain_mean/_low/_high, kd_gain_seeds, distillation_paid)."""
    counts = Counter(run.outcome for run in runs)
    summary = {f"trials_{outcome.value.lower()}": float(counts[outcome]) for outcome in Outcome}
    summary["trials"] = float(len(runs))
    reached = [
        run.metrics.get(f"best_{metric}", run.metrics.get(metric, math.nan))
        for run in runs
        if run.outcome in (Outcome.FINISHED, Outcome.STOPPED)
    ]
    reached = [value for value in reached if math.isfinite(value)]
    if reached:
        summary[f"best_{metric}"] = max(reached) if mode == "max" else min(reached)
    summary["baselines"] = float(sum(run.baseline for run in runs))
    for name in GAINS:
        values = [run.metrics[name] for run in runs if name in run.metrics and math.isfinite(run.metrics[name])]
        if values:
            summary[f"best_{name}"] = max(values)
    configs = configurations(runs)
    summary["configurations"] = float(len(configs))
    summary["confirmed_configurations"] = float(sum(config.confirmed(metric) for config in configs))
    answer = judged(rank_configurations(configs, metric, mode), metric)
    if answer is not None:
        gain = answer.stats(metric).kd_gain
        summary |= _estimate_metrics("kd_gain", gain)
        summary["distillation_paid"] = float(paid(gain))
    if champion is not None:
        for name in dict.fromkeys((metric, *CHAMPION_METRICS)):
            if name in champion.metrics:
                summary[f"champion_{name}"] = float(champion.metrics[name])
        summary |= _estimate_metrics(f"champion_{metric}", champion.stats.value)
        summary["champion_seeds"] = float(champion.stats.value.n)
        summary["champion_confirmed"] = float(champion.stats.confirmed)
        summary["champion_scratch"] = float(champion.kind == SCRATCH)
    return summary


def _estimate_metrics(prefix: str, value: Estimate) -> dict[str, float]:
    """<prefix>_mean, _seeds and, with an interval, _low and _high."""
    out = {f"{prefix}_mean": value.mean, f"{prefix}_seeds": float(value.n)}
    if value.half_width is not None:
        out |= {f"{prefix}_low": value.low, f"{prefix}_high": value.high}
    return out


def summary_note(
    parent: Run,
    ranked: list[TrialRun],
    metric: str,
    mode: str,
    champion: Champion | None,
    no_champion: str,
    plots: list[str],
    val_size: int | None = None,
) -> str:
    """The description: one paragraph of counts, did distillation pay, the champion, the leaderboard, the plots."""
    counts = Counter(run.outcome for run in ranked)
    inputs = parent.inputs.dataset_inputs if parent.inputs else []
    data = f" on **{inputs[0].dataset.name}** (digest `{inputs[0].dataset.digest}`)" if inputs else ""
    lines = [
        f"**Sweep `{parent.data.tags.get(TAG_SWEEP, parent.info.run_name)}`**: {len(ranked)} trials{data}: "
        f"{counts[Outcome.FINISHED]} finished, {counts[Outcome.STOPPED]} stopped early by the scheduler, "
        f"{counts[Outcome.COLLAPSED]} collapsed to chance, {counts[Outcome.DIVERGED]} diverged, "
        f"{counts[Outcome.ERROR]} failed"
        + (
            f", {counts[Outcome.INFEASIBLE]} infeasible (over the deploy budget, never trained)"
            if counts[Outcome.INFEASIBLE]
            else ""
        )
        + f". Ranked by `{metric}` ({mode}).",
        "",
    ]
    baselines = sum(run.baseline for run in ranked)
    if baselines:
        answer = verdict(rank_configurations(configurations(ranked), metric, mode), metric, val_size)
        lines += [
            f"**Does distillation pay?** {answer[0].upper()}{answer[1:]}. {baselines} scratch baseline run(s) "
            f"(each student without the teacher) compete for champion; `kd_gain` and `gap_closed` compare each "
            "trial with its own, seed by seed.",
            "",
        ]
    if champion is not None:
        shown = ", ".join(
            f"{name} {_number(name, champion.metrics[name])}"
            for name in dict.fromkeys((metric, *CHAMPION_METRICS))
            if name in champion.metrics
        )
        lines.append(
            f"**Champion** ({champion.kind}, {describe_seeds(champion.stats.value)}): `{champion.run_name}` ({shown}), "
            f"registered as `{champion.model_uri}` (version {champion.version})."
            + (f" {champion.scratch_note[0].upper()}{champion.scratch_note[1:]}." if champion.scratch_note else "")
        )
    else:
        lines.append(f"**No champion**{f': {no_champion}' if no_champion else ''}.")
    lines.append("")
    tail = (
        ["", "Plots (artifacts of this run): " + "; ".join(f"`{p}`: {PLOTS[p]}" for p in plots) + "."] if plots else []
    )
    table = leaderboard_of(ranked, metric, markdown=True, val_size=val_size).splitlines()
    lines += _fit(table, NOTE_LIMIT - len("\n".join(lines + tail)) - 80)
    return "\n".join(lines + tail)


def _fit(table: list[str], budget: int) -> list[str]:
    """The header and as many rows as fit in `budget` characters, then how many were left out."""
    kept, used = table[:2], len(table[0]) + len(table[1]) + 2
    for row in table[2:]:
        if used + len(row) + 1 > budget:
            return [*kept, "", f"... and {len(table) - len(kept)} more trials: see the runs table."]
        kept.append(row)
        used += len(row) + 1
    return kept


def _number(name: str, value: float) -> str:
    return f"{value:,.0f}" if name in ("params", "flops") else f"{value:.4g}"
