"""timm's models as kdsweep models: `timm/NAME` for any NAME that `timm.list_models()` lists.

timm (https://github.com/huggingface/pytorch-image-models) is the field's model zoo, with one
`create_model(name, num_classes, in_chans, pretrained)` for all of it. Its names resolve when asked
for (the registry's `timm/` catalogue), never registered one by one; the lightweight students worth
trying are registered by name, so that `list_models("student")` and the docs list them.

On small inputs (at or below `SMALL_IMAGE` pixels) the convolutions that read the image itself, the
stem, get stride 1 where timm gives them 2: their kernels and weight shapes stay as timm made them (so
timm's pretrained weights still load), and the network keeps twice the resolution in every stage (on
32x32, a final 2x2 map instead of 1x1; on 8x8 digits, 8x8 in the first stage instead of 4x4). Nothing
else changes: a stem of another stride (ConvNeXt's 4x4 patches) and the max-pools stay.

timm is imported when a timm model is first checked or built: `import kdsweep` does not pay for it.
"""

from __future__ import annotations

import logging
from functools import cache

import torch
from torch import nn

from kdsweep.models.registry import SMALL_IMAGE, ModelEntry, ModelFn, add_model_catalogue, register_model

PREFIX = "timm/"
# timm's lightweight ImageNet students that build, train and forward on 1x8x8 and 3x32x32 inputs; their
# sizes on 32x32 are printed by benchmarks/timm_students.py (docs/models.md).
LIGHTWEIGHT_STUDENTS = (
    "lcnet_050",
    "mobilenetv3_small_050",
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "ghostnet_100",
    "repvit_m0_9",
    "fastvit_t8",
    "efficientnet_b0",
)


@cache
def timm_names() -> frozenset[str]:
    """Every architecture timm has (without pretrained tags)."""
    import timm

    return frozenset(timm.list_models())


def timm_model(name: str) -> ModelFn:
    """`build(num_classes, in_channels, image_size, small_input_stem=None)` of timm's `name`; on small inputs
    (or when `small_input_stem` says so), the stem at stride 1. Both stems have the same weight shapes, so
    a brought timm state_dict cannot tell which it was trained with: `teacher.small_input_stem` does."""

    def build(num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | None = None) -> nn.Module:
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
        small = image_size <= SMALL_IMAGE if small_input_stem is None else small_input_stem
        if small:
            for conv in image_readers(model, in_channels, image_size):
                if conv.stride == (2, 2):
                    conv.stride = (1, 1)
        return model

    return build


def image_readers(model: nn.Module, in_channels: int, image_size: int) -> list[nn.Conv2d]:
    """The convolutions that take the image itself as input (a multi-branch stem has several), found by
    running the model once, on an image twice the size: behind timm's stride-2 stem, the rest of the
    network sees the sizes it will see at `image_size` behind a stride-1 one."""
    image = torch.zeros(1, in_channels, 2 * image_size, 2 * image_size)
    readers: list[nn.Conv2d] = []

    def record(conv: nn.Module, inputs: tuple) -> None:
        if inputs and inputs[0] is image:
            readers.append(conv)

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(image)  # eval: BatchNorm's running statistics stay untouched
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return readers


def timm_pretrained_state(name: str, weights: str | bool) -> dict[str, torch.Tensor]:
    """timm's pretrained weights for `name` at ImageNet's shape: `weights` True for timm's default, or a
    pretrained tag (e.g. "lamb_in1k" for mobilenetv3_small_100). Downloaded once into timm's cache
    (Hugging Face's, $HF_HOME); raises LookupError when no such weights exist, OSError when they cannot
    be fetched (without network, after the Hub's own retries: about a minute)."""
    import timm

    tags = [tagged.partition(".")[2] for tagged in timm.list_pretrained(f"{name}.*")]
    if not tags:
        raise LookupError(f"'{PREFIX}{name}' has no timm pretrained weights")
    if weights is not True and weights not in tags:
        raise LookupError(f"unknown weights '{weights}' for {PREFIX}{name} (choose from: true, {', '.join(tags)})")
    tagged = name if weights is True else f"{name}.{weights}"
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # without network, a warning per retry: the caller's error says it once
    try:
        return timm.create_model(tagged, pretrained=True).state_dict()
    finally:
        hub_log.setLevel(level)


for _name in LIGHTWEIGHT_STUDENTS:
    register_model(PREFIX + _name, "student", stems=True)(timm_model(_name))
# Any other timm name, resolved when asked for (the role is read for registered names only).
add_model_catalogue(PREFIX, timm_names, lambda name: ModelEntry(timm_model(name), "any", stems=True))
