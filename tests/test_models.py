"""Tests for kdsweep.models: every registered model builds and runs on small images; costs are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdsweep.models import (
    CifarResNet,
    count_flops,
    count_params,
    cpu_latency_ms,
    create_model,
    has_stem_variants,
    list_models,
)
from kdsweep.models.cifar_wrn import WideResNet

REQUIRED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11_bn",
    "vgg16_bn",
    "resnet56",
    "resnet32x4",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "resnet8",
    "resnet20",
    "resnet8x4",
    "wrn_40_2",
    "wrn_16_2",
    "wrn_40_1",
    "small_cnn",
]

# VGGs run only on the two required shapes (building one costs ~1 s), the rest on every shape.
# (torchvision's VGG builds its 100M-parameter ImageNet classifier before create_model replaces it.)
# timm's students are built on those two shapes in tests/test_timm.py.
HEAVY = {"vgg11_bn", "vgg16_bn"}
SHAPES = [(1, 8), (3, 32), (1, 28), (3, 8), (1, 32), (3, 28)]
REQUIRED_SHAPES = SHAPES[:2]

CASES = [
    pytest.param(name, channels, size, id=f"{name}-{channels}x{size}x{size}")
    for name in list_models()
    if not name.startswith("timm/")
    for channels, size in (REQUIRED_SHAPES if name in HEAVY else SHAPES)
]


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_required_model_names_are_registered():
    assert set(REQUIRED) <= set(list_models())


def test_list_models_by_role_partitions_the_registry():
    teachers, students = list_models("teacher"), list_models("student")
    assert not set(teachers) & set(students)
    assert sorted(teachers + students) == list_models()
    assert "resnet56" in teachers
    assert "small_cnn" in students


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_model_forward_gives_finite_logits_of_shape_batch_by_classes(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    logits = _forward(model, torch.randn(2, channels, size, size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_resnet18_small_image_stem_is_stride_one_without_maxpool():
    model = create_model("resnet18", 10, 3, 32)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 3
    assert isinstance(model.maxpool, nn.Identity)
    # The first residual stage sees the full 32x32 image.
    seen = {}
    model.layer1.register_forward_hook(lambda module, inputs, output: seen.update(shape=output.shape))
    _forward(model, torch.randn(1, 3, 32, 32))
    assert seen["shape"] == (1, 64, 32, 32)


def test_resnet18_on_224_keeps_the_imagenet_stem_with_new_in_channels():
    model = create_model("resnet18", 10, 1, 224)
    assert model.conv1.kernel_size == (7, 7)
    assert model.conv1.stride == (2, 2)
    assert model.conv1.padding == (3, 3)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_small_input_stem_chooses_either_stem_whatever_the_image_size():
    imagenet_on_8 = create_model("resnet18", 10, 3, 8, small_input_stem=False)
    assert imagenet_on_8.conv1.kernel_size == (7, 7)
    assert isinstance(imagenet_on_8.maxpool, nn.MaxPool2d)
    small_on_224 = create_model("resnet18", 10, 3, 224, small_input_stem=True)
    assert small_on_224.conv1.kernel_size == (3, 3)
    assert isinstance(small_on_224.maxpool, nn.Identity)
    assert has_stem_variants("resnet18")
    assert not has_stem_variants("resnet8")
    with pytest.raises(TypeError):  # one stem only: the caller (teacher.small_input_stem) checks first
        create_model("resnet8", 10, 3, 8, small_input_stem=False)


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x0_5"])
def test_small_image_stem_of_mobile_students_is_stride_one(name):
    model = create_model(name, 10, 1, 32)
    stem = model.features[0][0] if name.startswith("mobilenet") else model.conv1[0]
    assert stem.stride == (1, 1)
    assert stem.in_channels == 1
    big = create_model(name, 10, 1, 224)
    big_stem = big.features[0][0] if name.startswith("mobilenet") else big.conv1[0]
    assert big_stem.stride == (2, 2)
    assert big_stem.in_channels == 1


def test_vgg_small_image_uses_a_linear_head_from_512_features():
    model = create_model("vgg11_bn", 10, 3, 32)
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5  # log2(32): down to 1x1 exactly
    assert len([m for m in create_model("vgg11_bn", 10, 1, 8).features if isinstance(m, nn.MaxPool2d)]) == 3


def _small_cnn_params(in_channels: int, width: int, num_classes: int) -> int:
    """Three 3x3 bias-free convs (c->w, w->2w, 2w->4w), each with BatchNorm (2 params per channel), a linear head."""
    convs = 9 * (in_channels * width + width * 2 * width + 2 * width * 4 * width)
    norms = 2 * (width + 2 * width + 4 * width)
    head = 4 * width * num_classes + num_classes
    return convs + norms + head


def test_small_cnn_width_4_has_hand_computed_parameter_count():
    # conv 1->4: 36, bn 8; conv 4->8: 288, bn 16; conv 8->16: 1152, bn 32; linear 16->10: 170
    assert _small_cnn_params(1, 4, 10) == 1702
    assert count_params(create_model("small_cnn", 10, 1, 8, width=4)) == 1702


@pytest.mark.parametrize("width", [2, 8, 16])
def test_small_cnn_parameter_count_follows_width(width):
    model = create_model("small_cnn", 10, 3, 32, width=width)
    assert count_params(model) == _small_cnn_params(3, width, 10)


def test_small_cnn_default_width_is_16():
    default = create_model("small_cnn", 10, 1, 8)
    assert count_params(default) == _small_cnn_params(1, 16, 10)


def test_width_is_rejected_by_fixed_width_models():
    with pytest.raises(TypeError):
        create_model("resnet8", 10, 1, 8, width=4)


def test_count_params_of_linear_3_to_2_is_8():
    assert count_params(nn.Sequential(nn.Linear(3, 2))) == 3 * 2 + 2


def test_count_flops_of_linear_is_two_times_in_times_out():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert count_flops(model, (1, 2, 2)) == 2 * 4 * 3


def test_count_flops_of_conv_is_two_macs_per_output_element():
    # 3 output channels x 5x5 positions, each 2 input channels x 3x3 taps.
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False))
    assert count_flops(model, (2, 5, 5)) == 2 * (3 * 5 * 5) * (2 * 3 * 3)


def test_count_flops_of_strided_conv_counts_only_computed_outputs():
    # stride 2 on 8x8 with padding 1 -> 4x4 outputs, 4 channels, 1x3x3 taps each
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False))
    assert count_flops(model, (1, 8, 8)) == 2 * (4 * 4 * 4) * 9


def test_count_flops_restores_training_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    model.train()
    count_flops(model, (1, 2, 2))
    assert model.training
    model.eval()
    count_flops(model, (1, 2, 2))
    assert not model.training


def test_cpu_latency_ms_is_a_positive_float():
    latency = cpu_latency_ms(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (1, 2, 2), min_run_time=0.01)
    assert isinstance(latency, float)
    assert latency > 0


def test_unknown_model_name_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"unknown model 'mobilnet_v2'; did you mean 'mobilenet_v2'\?"):
        create_model("mobilnet_v2", 10, 3, 32)


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("resnet8", 8),
        ("resnet20", 20),
        ("resnet32", 32),
        ("resnet56", 56),
        ("resnet110", 110),
        ("resnet8x4", 8),
        ("resnet32x4", 32),
    ],
)
def test_cifar_resnet_has_6n_plus_2_weighted_layers(name, depth):
    model = create_model(name, 10, 3, 32)
    blocks = [m for m in model.modules() if m.__class__.__name__ == "BasicBlock"]
    assert len(blocks) == 3 * (depth - 2) // 6
    # stem conv + two 3x3 convs per block + fc; the 1x1 shortcut projections are not counted
    main_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(main_convs) + len(linears) == depth


def test_cifar_resnet_x4_widths_and_downsampling():
    model = create_model("resnet8x4", 10, 3, 32)
    assert model.stem[0].out_channels == 32
    assert model.fc.in_features == 256
    seen = {}
    model.layers.register_forward_hook(lambda module, inputs, output: seen.update(shape=output.shape))
    _forward(model, torch.randn(1, 3, 32, 32))
    assert seen["shape"] == (1, 256, 8, 8)  # two stride-2 stages: 32 -> 8


@pytest.mark.parametrize("depth", [7, 10, 21])
def test_cifar_resnet_rejects_depth_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth, (16, 16, 32, 64), 10, 3)


@pytest.mark.parametrize(
    ("name", "millions"),  # on CIFAR-100, as tabulated by CRD (Tian et al. 2020) and DKD (Zhao et al. 2022)
    [
        ("wrn_40_2", 2.26),
        ("wrn_16_2", 0.70),
        ("wrn_40_1", 0.57),
        ("resnet32x4", 7.43),
        ("resnet8x4", 1.23),
        ("resnet56", 0.86),
        ("resnet20", 0.28),
    ],
)
def test_the_benchmark_pairs_have_their_published_sizes(name, millions):
    assert round(count_params(create_model(name, 100, 3, 32)) / 1e6, 2) == millions


def test_a_wide_resnet_has_6n_plus_4_layers_and_k_times_the_widths():
    model = create_model("wrn_40_2", 10, 3, 32)
    assert len([m for m in model.modules() if m.__class__.__name__ == "WideBlock"]) == 3 * (40 - 4) // 6
    assert model.fc.in_features == 64 * 2
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(41, 2, 10, 3)
