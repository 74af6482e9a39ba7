"""Model registry: MODELS[arch](num_classes, in_channels, image_size) -> nn.Module.

Every model has forward(x) -> logits and forward_features(x) -> (logits, [stage feature maps, NCHW]),
with at least 3 stages and the same number of stages for every input size (>= 8 px).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from kdcore.models.cifar_resnet import CifarResNet, WideResNet
from kdcore.models.cifar_small import VGG_CONFIGS, CifarMobileNetV2, CifarShuffleNetV2, CifarVGG
from kdcore.models.tv import FEATURE_CLASSES, build_torchvision

ModelFactory = Callable[[int, int, int], nn.Module]


def _resnet(depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int,
            image_size: int) -> nn.Module:
    return CifarResNet(depth, widths, num_classes, in_channels)


def _wrn(depth: int, widen: int, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return WideResNet(depth, widen, num_classes, in_channels)


def _vgg(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return CifarVGG(VGG_CONFIGS[name], num_classes, in_channels, image_size)


def _torchvision(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return build_torchvision(name, num_classes, in_channels)


_NARROW = (16, 16, 32, 64)
_WIDE_X4 = (32, 64, 128, 256)

MODELS: dict[str, ModelFactory] = {
    **{f"resnet{d}": partial(_resnet, d, _NARROW) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": partial(_resnet, 8, _WIDE_X4),
    "resnet32x4": partial(_resnet, 32, _WIDE_X4),
    **{f"wrn_{d}_{k}": partial(_wrn, d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 10))},
    **{name: partial(_vgg, name) for name in VGG_CONFIGS},
    "mobilenetv2": lambda num_classes, in_channels, image_size: CifarMobileNetV2(num_classes, in_channels),
    "shufflenetv2": lambda num_classes, in_channels, image_size: CifarShuffleNetV2(num_classes, in_channels),
    **{name: partial(_torchvision, name) for name in FEATURE_CLASSES},
}


def build_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build an untrained model; the caller seeds torch for a reproducible init."""
    if arch not in MODELS:
        raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(MODELS)}")
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ValueError(
            f"need num_classes >= 1, in_channels >= 1, image_size >= 8 "
            f"(got {num_classes}, {in_channels}, {image_size})"
        )
    return MODELS[arch](num_classes, in_channels, image_size)


__all__ = ["MODELS", "ModelFactory", "build_model"]
