"""A model's predictions and metrics on a whole split (scikit-learn's metrics, as they are)."""

from __future__ import annotations

import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn

from kdsweep.data import Dataset, eval_batches
from kdsweep.trial.device import autocast, model_device

# Evaluation holds no gradients: batches this large fit any device and keep the loop short.
EVAL_BATCH_SIZE = 512


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole split, in order, on the model's device."""
    model.eval()
    device = model_device(model)
    logits, labels = [], []
    for batch in eval_batches(data, getattr(data, split), EVAL_BATCH_SIZE, device):
        with autocast(device):
            logits.append(model(batch.images).float())
        labels.append(batch.labels)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module, data: Dataset, split: str, teacher_logits: torch.Tensor | None = None
) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 (scikit-learn), CE loss and agreement with the teacher."""
    logits, labels = predict(model, data, split)
    predicted = logits.argmax(1).cpu().numpy()
    truth = labels.cpu().numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    metrics = {
        f"{split}_accuracy": float(accuracy_score(truth, predicted)),
        f"{split}_macro_precision": float(precision),
        f"{split}_macro_recall": float(recall),
        f"{split}_macro_f1": float(f1),
        f"{split}_loss": float(nn.functional.cross_entropy(logits, labels)),
    }
    if teacher_logits is not None:
        agree = (teacher_logits.argmax(1).cpu().numpy() == predicted).mean()
        metrics["teacher_agreement"] = float(agree)
    return metrics
