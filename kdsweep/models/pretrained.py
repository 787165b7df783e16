"""Start a model from its source's pretrained weights (torchvision's or timm's) wherever the shapes agree."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from kdsweep.errors import one_line
from kdsweep.models.timm_models import PREFIX, timm_pretrained_state

Weights = str | bool  # True: the source's default weights; a string names them


class PretrainedUnavailable(ValueError):
    """The asked-for pretrained weights do not exist for this model, or cannot be fetched."""


def load_pretrained(model: nn.Module, name: str, weights: Weights) -> list[str]:
    """Start `model` (built by `create_model(name, ...)`) from pretrained `weights` wherever shapes agree.

    The weights are those of ImageNet's model: an adapted stem that changed shape (1 channel) and the
    classifier head keep their fresh initialisation (a stem at stride 1 keeps its shape, and its weights).
    Returns the keys not taken from the checkpoint. See `pretrained_state` for `weights`.
    """
    state = pretrained_state(name, weights)
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def pretrained_state(name: str, weights: Weights) -> dict[str, torch.Tensor]:
    """The pretrained state dict of model `name` at ImageNet's shape, fetched once into its source's cache.

    Args:
        name: a kdsweep model with torchvision weights (resnet18, mobilenet_v2, ...) or `timm/NAME`.
        weights: True for the source's default (torchvision's DEFAULT, timm's default tag), or their
            name: a torchvision weights enum member (IMAGENET1K_V1) or a timm pretrained tag (lamb_in1k).

    Raises PretrainedUnavailable (one line: what exists, or where to put the file without network).
    """
    if name.startswith(PREFIX):
        try:
            return timm_pretrained_state(name.removeprefix(PREFIX), weights)
        except LookupError as error:
            raise PretrainedUnavailable(str(error)) from None
        except OSError as error:  # no network, and not in the cache
            raise PretrainedUnavailable(
                f"cannot download {name}'s pretrained weights ({error.__class__.__name__}: {one_line(error)}); without "
                "network, run timm.create_model(NAME, pretrained=True) once where there is, and copy Hugging Face's "
                "cache (HF_HOME) here"
            ) from None
    return _torchvision_state(name, "DEFAULT" if weights is True else str(weights))


def _torchvision_state(name: str, weights: str) -> dict[str, torch.Tensor]:
    """torchvision's `weights` for `name`, checked against their hash and read weights-only ($TORCH_HOME)."""
    try:
        enum = tvm.get_model_weights(name)
    except (KeyError, ValueError):
        raise PretrainedUnavailable(
            f"'{name}' has no pretrained weights (only torchvision models and timm/NAME have)"
        ) from None
    if weights not in enum.__members__:
        raise PretrainedUnavailable(
            f"unknown weights '{weights}' for {name} (choose from: true, {', '.join(enum.__members__)})"
        )
    try:
        return enum[weights].get_state_dict(progress=False, check_hash=True)
    except OSError as error:  # URLError included: no network
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise PretrainedUnavailable(
            f"cannot download {name} {weights} ({error.__class__.__name__}: {getattr(error, 'reason', error)}); "
            f"without network, put {enum[weights].url.rsplit('/', 1)[-1]} from {enum[weights].url} into {cache}"
        ) from None
