"""A sweep's runs grouped into configurations, and the champion rule over them (pure: nothing here
reads data or MLflow).

A configuration is what a trial trains, its seed aside: its kind (distilled, or scratch: a scratch
baseline) and its parameters without `seed` and without the settings that do not change training
(`NOT_TRAINING`, as for a baseline's key). Its runs are its seeds: the search trial (the sweep's
seed) and any confirmation trials (more seeds). It is *confirmed* when at least CONFIRMED_SEEDS of
them FINISHED. A sweep without confirmation trials has single-seed configurations only: n = 1 and
no interval.

Its `kd_gain` is the paired mean over its seeds: each seed's run logged the difference from its
student's scratch run with the same seed, at the same epoch (a baseline's key includes its seed;
kdsweep.sweep.baselines pairs them), so the configuration's estimate is the t interval of those
differences (kdsweep.confidence); `gap_closed` likewise.

The champion rule (`rank_configurations`): confirmed configurations rank ahead of single-seed ones,
then by RULE: the mean over seeds (the default) or the pessimistic end of its interval (the lower
bound for a metric to maximise). The mean: with 3 seeds the interval's width rests on a standard
deviation estimated from 3 values (t(0.975, 2) = 4.3 times a noisy s), so ranking by the lower bound
mostly ranks by that noise; confirmation already removes the lucky single seed, which is the bias a
lower bound is meant to guard against. `RULE = "lower_bound"` switches it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kdsweep.confidence import CONFIDENCE, Estimate, estimate, paid
from kdsweep.outcome import Outcome
from kdsweep.selection import TrialRun, rank
from kdsweep.trial import NOT_TRAINING

SEEDLESS = ("seed", *NOT_TRAINING)  # what two seeds of one configuration may differ in
CONFIRMED_SEEDS = 2  # finished seeds that make a configuration confirmed
RULES = ("mean", "lower_bound")
RULE = "mean"  # see the module's docstring; the benchmark measures both
DISTILLED, SCRATCH = "distilled", "scratch"


def configuration_key(params: Mapping[str, Any], scratch: bool) -> str:
    """Names one configuration: its kind and its parameters (typed, or strings as MLflow logs them) but its seed."""
    kept = {name: str(value) for name, value in params.items() if name not in SEEDLESS}
    return json.dumps([SCRATCH if scratch else DISTILLED, kept], sort_keys=True)


def seed_of(run: TrialRun) -> int:
    """The run's seed: TrialConfig's default (0) when it was not set."""
    return int(float(run.params.get("seed", 0)))


@dataclass(frozen=True)
class SeedStats:
    """A configuration's figures over its finished seeds, as the leaderboard and the summary show them."""

    metric: str
    value: Estimate  # `metric` over the finished seeds
    confirmed: bool
    kd_gain: Estimate | None = None  # distilled only: paired with the scratch seeds
    gap_closed: Estimate | None = None

    def to_json(self) -> dict[str, Any]:
        def interval(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"mean": e.mean, "low": e.low, "high": e.high, "seeds": e.n}

        return {
            "metric": self.metric,
            "seeds": self.value.n,
            "confirmed": self.confirmed,
            "confidence": CONFIDENCE,
            "value": interval(self.value),
            "kd_gain": interval(self.kd_gain),
            "gap_closed": interval(self.gap_closed),
        }


@dataclass(frozen=True)
class Configuration:
    """One configuration's runs, the search trial's (its lowest seed) first."""

    kind: str  # DISTILLED or SCRATCH
    runs: tuple[TrialRun, ...]

    @property
    def name(self) -> str:
        return self.runs[0].name

    @property
    def student(self) -> str:
        params = self.runs[0].params
        width = params.get("width")
        return str(params.get("student", "resnet8")) + (f"(w{width})" if width not in (None, "None") else "")

    def finished(self, metric: str) -> list[TrialRun]:
        """The seeds that ran their whole budget and logged `metric`: what the figures are over. One run per
        seed: two trials that drew the same configuration with the same seed are one measurement, not two."""
        seeds: dict[int, TrialRun] = {}
        for run in self.runs:
            if run.outcome == Outcome.FINISHED and metric in run.metrics:
                seeds.setdefault(seed_of(run), run)
        return list(seeds.values())

    def confirmed(self, metric: str) -> bool:
        return len(self.finished(metric)) >= CONFIRMED_SEEDS

    def mean_metrics(self, metric: str) -> dict[str, float]:
        """The mean over the finished seeds of every metric they all logged: what constraints judge."""
        runs = self.finished(metric)
        shared = set.intersection(*(set(run.metrics) for run in runs)) if runs else set()
        return {name: math.fsum(run.metrics[name] for run in runs) / len(runs) for name in shared}

    def stats(self, metric: str) -> SeedStats | None:
        """None when no seed finished with `metric`."""
        runs = self.finished(metric)
        if not runs:
            return None

        def over_seeds(name: str) -> Estimate | None:  # only when every finished seed has it
            values = [run.metrics.get(name) for run in runs]
            return None if self.kind == SCRATCH or None in values else estimate(values)

        value = estimate([run.metrics[metric] for run in runs])
        return SeedStats(metric, value, len(runs) >= CONFIRMED_SEEDS, over_seeds("kd_gain"), over_seeds("gap_closed"))

    def best_run(self, metric: str, mode: str) -> TrialRun | None:
        """The seed to ship: the best candidate (finished with a model) by `metric`, as every trial is ranked."""
        candidates = [run for run in self.runs if run.is_candidate and metric in run.metrics]
        return rank(candidates, metric, mode)[0] if candidates else None


def configurations(runs: list[TrialRun]) -> list[Configuration]:
    """The runs grouped by configuration, in the order each configuration first appears."""
    groups: dict[str, list[TrialRun]] = {}
    for run in runs:
        groups.setdefault(configuration_key(run.params, run.baseline), []).append(run)
    return [
        Configuration(SCRATCH if group[0].baseline else DISTILLED, tuple(sorted(group, key=seed_of)))
        for group in groups.values()
    ]


def score(value: Estimate, mode: str, rule: str = RULE) -> float:
    """What RULE ranks a configuration by: its mean, or the pessimistic end of its interval (one seed: its value)."""
    if rule not in RULES:
        raise ValueError(f"unknown champion rule '{rule}' (choose from: {', '.join(RULES)})")
    if rule == "lower_bound" and value.half_width is not None:
        return value.low if mode == "max" else value.high
    return value.mean


def rank_configurations(
    configs: list[Configuration], metric: str, mode: str, rule: str = RULE, latency: str = "latency_ms"
) -> list[Configuration]:
    """The configurations with a finished seed, best first: confirmed ones ahead of single-seed ones,
    then by `rule`'s score of `metric`, then lower mean `latency` (latency_ms_int8 at int8), then fewer params."""
    sign = -1.0 if mode == "max" else 1.0
    scored = [(config, config.stats(metric)) for config in configs]

    def key(item: tuple[Configuration, SeedStats]) -> tuple:
        config, stats = item
        means = config.mean_metrics(metric)
        return (
            not stats.confirmed,
            sign * score(stats.value, mode, rule),
            means.get(latency, math.inf),
            means.get("params", math.inf),
        )

    return [config for config, _ in sorted(((c, s) for c, s in scored if s is not None), key=key)]


def seed_stats(runs: list[TrialRun], metric: str) -> dict[str, SeedStats]:
    """Each run's configuration's figures, by run id (runs of a configuration with no finished seed are absent)."""
    out = {}
    for config in configurations(runs):
        stats = config.stats(metric)
        if stats is not None:
            out.update({run.run_id: stats for run in config.runs})
    return out


def points(value: float) -> str:
    """An accuracy difference in points (hundredths), signed."""
    return f"{100 * value:+.2f}"


def describe_seeds(value: Estimate) -> str:
    """e.g. "mean over 3 seeds 0.9512, 95% interval [0.9401, 0.9623]", or "one seed"."""
    if value.half_width is None:
        return "one seed"
    return f"mean over {value.n} seeds {value.mean:.4f}, {CONFIDENCE:.0%} interval [{value.low:.4f}, {value.high:.4f}]"


def gain_text(gain: Estimate) -> str:
    """e.g. "kd_gain +2.31 points (95% interval [+0.85, +3.77] over 3 seeds)"."""
    if gain.half_width is None:
        return f"kd_gain {points(gain.mean)} points (one seed, no interval)"
    interval = f"[{points(gain.low)}, {points(gain.high)}]"
    return f"kd_gain {points(gain.mean)} points ({CONFIDENCE:.0%} interval {interval} over {gain.n} seeds)"


def judged(ranked: list[Configuration], metric: str) -> Configuration | None:
    """The configuration whose kd_gain answers "did distillation pay": the best distilled one (by the
    champion rule: `ranked`) that was compared with its scratch baseline."""
    for config in ranked:
        stats = config.stats(metric)
        if config.kind == DISTILLED and stats is not None and stats.kd_gain is not None:
            return config
    return None


def verdict(ranked: list[Configuration], metric: str, val_size: int | None) -> str:
    """What the user asked: did distillation pay, for which student, by how much, how sure (the champion
    says when a scratch student beat every distilled one: `scratch_won`). `ranked`: by the champion rule."""
    image = f"; validation {val_size} images, one image = {100 / val_size:.2f} points" if val_size else ""
    config = judged(ranked, metric)
    if config is None:
        return f"distillation: no distilled student was compared with its scratch baseline{image}"
    stats = config.stats(metric)
    gain, gap = stats.kd_gain, stats.gap_closed
    if gain.half_width is None:
        said = "on one seed, not confirmed:"
    elif paid(gain):
        said = "paid for"
    elif gain.high < 0:
        said = "did not pay for"
    else:
        said = "is not shown (the interval holds 0) for"
    closed = ""
    if gap is not None:
        interval = "" if gap.half_width is None else f" [{gap.low:.0%}, {gap.high:.0%}]"
        closed = f", closing {gap.mean:.0%}{interval} of the teacher-scratch gap"
    return (
        f"distillation {said} {config.student} ({config.name}): {gain_text(gain)} over the same student "
        f"from scratch, paired seed by seed{closed}{image}"
    )


def scratch_won(chosen: Configuration, best_distilled: Configuration | None, metric: str) -> str:
    """The one line that says a scratch student beat every distilled one."""
    mine = chosen.stats(metric).value
    if best_distilled is None:
        return f"distillation did not beat scratch here: {chosen.student} from scratch {mine.mean:.4f}, none distilled"
    theirs = best_distilled.stats(metric).value
    return (
        f"distillation did not beat scratch here: {chosen.student} from scratch {mine.mean:.4f} ({_seeds(mine.n)}) "
        f"vs best distilled {best_distilled.name} {theirs.mean:.4f} ({_seeds(theirs.n)}), "
        f"by {_difference(metric, abs(mine.mean - theirs.mean))}"
    )


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _difference(metric: str, value: float) -> str:
    """Accuracies differ by points (hundredths); any other metric in its own unit."""
    return f"{100 * value:.2f} points" if "accuracy" in metric else f"{value:.4g} {metric}"
