"""The figures kdsweep logs (matplotlib, headless): a confusion matrix per student, the Pareto front and the
parameter importances per sweep."""

from __future__ import annotations

from matplotlib.figure import Figure  # no pyplot: no backend, no global state, figures are only saved
from sklearn.metrics import ConfusionMatrixDisplay

from kdsweep.selection import Constraints, TrialRun, front_metrics

PARETO_PLOT = "pareto_front.png"  # pareto_figure's file on a sweep's parent run (kdsweep.champion logs it)


def confusion_figure(labels, predicted, num_classes: int) -> Figure:
    figure = Figure(figsize=(6, 6))
    axes = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(labels, predicted, labels=list(range(num_classes)), ax=axes, colorbar=False)
    axes.set_title("validation confusion matrix")
    return figure


def pareto_figure(
    candidates: list[TrialRun],
    front: list[TrialRun],
    champion: TrialRun | None,
    constraints: Constraints,
    precision: str = "fp32",
) -> Figure:
    """Validation accuracy against latency (at `precision`): every candidate, the Pareto front named, the
    champion starred."""
    accuracy, latency, _ = front_metrics(precision)

    def xy(runs: list[TrialRun]) -> tuple[list[float], list[float]]:
        placed = [r.metrics for r in runs if latency in r.metrics and accuracy in r.metrics]
        return [m[latency] for m in placed], [m[accuracy] for m in placed]

    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    axes.scatter(*xy(candidates), c="lightgray", edgecolors="gray", label="finished trials")
    axes.scatter(*xy(front), c="tab:red", label="Pareto front (accuracy, latency, params)")
    for run in front:  # every run on the front has both metrics
        axes.annotate(
            run.name,
            (run.metrics[latency], run.metrics[accuracy]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if champion is not None:
        axes.scatter(
            *xy([champion]), marker="*", s=300, c="gold", edgecolors="black", label=f"champion: {champion.name}"
        )
    if constraints.max_latency_ms is not None:
        axes.axvline(constraints.max_latency_ms, ls="--", c="gray")
    if constraints.min_accuracy is not None:
        axes.axhline(constraints.min_accuracy, ls="--", c="gray")
    axes.set(xlabel=f"{latency} (lower is better)", ylabel=accuracy, title=f"{constraints.describe()} ({precision})")
    axes.margins(0.15)
    axes.legend(fontsize=8)
    return figure


def importance_figure(scopes: list[tuple[str, dict[str, float]]], metric: str) -> Figure:
    """One horizontal bar chart per scope (its title, then parameter -> importance), the largest on top."""
    figure = Figure(figsize=(6, 1.0 + sum(0.35 * len(values) + 0.8 for _, values in scopes)))
    heights = [len(values) + 1.5 for _, values in scopes]
    axes_list = figure.subplots(len(scopes), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for axes, (title, values) in zip(axes_list, scopes, strict=True):
        names = list(values)[::-1]
        axes.barh(names, [values[name] for name in names], color="tab:blue")
        for y, name in enumerate(names):
            axes.annotate(
                f"{values[name]:.2f}",
                (values[name], y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        axes.set_xlim(0, 1.1)
        axes.set_title(title, fontsize=9, loc="left")
    axes_list[-1].set_xlabel(f"importance for {metric} (fANOVA; sums to 1 per panel)")
    figure.tight_layout()
    return figure
