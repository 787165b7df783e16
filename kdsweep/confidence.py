"""How sure a figure is, as pure functions: a mean over seeds with Student's t interval, and the
binomial standard error of an accuracy measured on a validation split of n images.

    mean     = sum(x) / n
    interval = mean -/+ t(0.975, n - 1) * s / sqrt(n)      s: the sample standard deviation (n - 1)
    se(p)    = sqrt(p * (1 - p) / n_images)

A configuration trained with n seeds gives n accuracies; their t interval says where the accuracy of
that configuration lies (95 %), with 3 seeds it is wide (t(0.975, 2) = 4.30) and the output shows it.
A paired difference (a distilled student's seed s minus its scratch baseline's seed s, as `kd_gain`
is) is a list of values like any other: the pairing removes what the two share (the data order, the
views of seed s), so its interval is narrower than that of two separate means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t

CONFIDENCE = 0.95  # of every interval kdsweep reports


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` values and its CONFIDENCE interval's half width (None with one value: no interval)."""

    mean: float
    n: int
    half_width: float | None

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def estimate(values: Sequence[float]) -> Estimate:
    """The mean of `values` with its Student's t interval (none for a single value)."""
    if not values:
        raise ValueError("an estimate needs at least one value")
    n, mean = len(values), math.fsum(values) / len(values)
    if n < 2:
        return Estimate(mean, n, None)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))
    return Estimate(mean, n, float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n))


def paid(gain: Estimate) -> bool:
    """Distillation paid only when the whole interval of its gain is above 0 (one seed proves nothing)."""
    return gain.low is not None and gain.low > 0


def binomial_se(accuracy: float, images: int) -> float:
    """The standard error of an accuracy measured on `images` images (one image is 1 / images)."""
    if images < 1:
        raise ValueError(f"an accuracy needs at least one image, got {images}")
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / images)
