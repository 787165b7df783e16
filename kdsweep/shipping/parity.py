"""Does the exported model compute what PyTorch computes? Logits compared on a whole validation split.

The split is the one the sweep selected on (the data the model was trained for, not random noise,
whose activations can sit in ranges real images never reach), run in evaluation-size batches and
once more at batch size 1 (what latency measures, and where a batch size baked into an export shows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kdsweep.data import Dataset, eval_batches

BATCH_SIZE = 256
Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Comparison:
    """A model against the PyTorch reference, on `images` validation images."""

    images: int
    max_abs_diff: float  # the largest |logit difference| over every image and class
    agreement: float  # the fraction of images whose predicted class is the reference's
    accuracy: float  # the model's own validation accuracy
    reference_accuracy: float


@dataclass(frozen=True)
class Check:
    """Parity within `tolerance`. Agreement is reported, not required: below the tolerance a differing
    class can only be a near tie of two logits, which says nothing about the export."""

    comparison: Comparison
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.comparison.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        c = self.comparison
        return (
            f"max |logit diff| {c.max_abs_diff:.1e} (tolerance {self.tolerance:.0e}), same predicted class on "
            f"{round(c.agreement * c.images)}/{c.images} ({c.agreement:.2%}): {'passed' if self.passed else 'FAILED'}"
        )


@torch.no_grad()
def compare(reference: Model, model: Model, data: Dataset) -> Comparison:
    """`model` against `reference` on the validation split of `data` (on the CPU)."""
    cpu = torch.device("cpu")
    max_diff, agree, correct, reference_correct, count = 0.0, 0, 0, 0, 0
    for batch in eval_batches(data, data.val, BATCH_SIZE, cpu):
        expected, got = reference(batch.images).float(), model(batch.images).float()
        max_diff = max(max_diff, _max_abs_diff(expected, got))
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        correct += int((got.argmax(1) == batch.labels).sum())
        reference_correct += int((expected.argmax(1) == batch.labels).sum())
        count += len(batch.labels)
    single = next(eval_batches(data, data.val, 1, cpu)).images
    max_diff = max(max_diff, _max_abs_diff(reference(single).float(), model(single).float()))
    return Comparison(count, max_diff, agree / count, correct / count, reference_correct / count)


def _max_abs_diff(expected: torch.Tensor, got: torch.Tensor) -> float:
    """A NaN on either side counts as an infinite difference (max() would skip it)."""
    return float(torch.nan_to_num((expected - got).abs(), nan=float("inf")).max())


def check_parity(reference: Model, model: Model, data: Dataset, tolerance: float) -> Check:
    return Check(compare(reference, model, data), tolerance)
