"""Models by name: teachers and students for small images, and what each costs on the edge.

`create_model(name, num_classes, in_channels, image_size, width=None)`; `list_models()`. Importing
this package registers every builder (torchvision adapted, CIFAR ResNets and Wide ResNets, the small CNN,
timm's models as `timm/NAME`).
"""

from kdsweep.models import cifar_resnet, cifar_wrn, small_cnn, timm_models, torchvision_small  # noqa: F401  (they register)
from kdsweep.models.cifar_resnet import CifarResNet
from kdsweep.models.cost import ModelCost, count_flops, count_params, cpu_latency_ms, measure_cost
from kdsweep.models.pretrained import PretrainedUnavailable, load_pretrained, pretrained_state
from kdsweep.models.registry import (
    create_model,
    has_stem_variants,
    is_model,
    list_models,
    register_model,
    require_model,
)

__all__ = [
    "CifarResNet",
    "ModelCost",
    "PretrainedUnavailable",
    "count_flops",
    "count_params",
    "cpu_latency_ms",
    "create_model",
    "has_stem_variants",
    "is_model",
    "list_models",
    "load_pretrained",
    "measure_cost",
    "pretrained_state",
    "register_model",
    "require_model",
]
