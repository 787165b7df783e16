"""Every random stream of a trial is a pure function of a seed and the epoch.

That is what makes a resumed epoch replay exactly, and what lets every trial of a sweep see the
same augmented views in the same epoch (so the teacher's logits for them can be computed once).
The streams use different large primes so that they stay independent of each other.
"""

from __future__ import annotations


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of `epoch`'s augmentation views (data seed) and of the trial's own randomness (trial seed)."""
    return seed * 1_000_003 + epoch


def shuffle_seed(seed: int, epoch: int) -> int:
    """The seed of `epoch`'s batch order: another stream than epoch_seed's, so order and views stay independent."""
    return (seed + 1) * 2_000_029 + epoch
