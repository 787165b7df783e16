"""Start a model from torchvision's pretrained weights wherever the shapes agree."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn


class PretrainedUnavailable(ValueError):
    """The asked-for pretrained weights do not exist for this model, or cannot be fetched."""


def load_pretrained(model: nn.Module, name: str, weights: str) -> list[str]:
    """Start `model` from torchvision's pretrained `weights` (e.g. IMAGENET1K_V1) wherever shapes agree.

    The adapted stem (small images, 1 channel) and the classifier head keep their fresh
    initialisation; the returned keys are those not taken from the checkpoint. The file is fetched
    once into torch's hub cache ($TORCH_HOME), checked against its hash, and read weights-only.
    """
    try:
        enum = tvm.get_model_weights(name)
    except (KeyError, ValueError):
        raise PretrainedUnavailable(
            f"'{name}' has no torchvision pretrained weights (only torchvision models do)"
        ) from None
    if weights not in enum.__members__:
        raise PretrainedUnavailable(
            f"unknown weights '{weights}' for {name} (choose from: {', '.join(enum.__members__)})"
        )
    try:
        state = enum[weights].get_state_dict(progress=False, check_hash=True)
    except OSError as error:  # URLError included: no network
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise PretrainedUnavailable(
            f"cannot download {name} {weights} ({error.__class__.__name__}: {getattr(error, 'reason', error)}); "
            f"without network, put {enum[weights].url.rsplit('/', 1)[-1]} from {enum[weights].url} into {cache}"
        ) from None
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
