"""torchvision models (weights=None) with forward_features.

The models keep torchvision's classes and parameter names, so ImageNet checkpoints converted to
safetensors still load. Each is given a small subclass (assigned to the instance's __class__) that adds
forward_features; forward is torchvision's own, so tracing and ONNX export see the stock graph.
Only the first conv is replaced (when in_channels != 3) and the head is built for num_classes; the
ImageNet stem is kept, and adaptive pooling makes inputs down to 8x8 work (they end at 1x1).
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from torch import nn


class _ResNetFeatures(tvm.ResNet):
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return self.fc(torch.flatten(self.avgpool(x), 1)), feats


class _ShuffleNetFeatures(tvm.ShuffleNetV2):
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool(self.conv1(x))
        f2 = self.stage2(x)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        return self.fc(self.conv5(f4).mean([2, 3])), [f2, f3, f4]


class _RegNetFeatures(tvm.RegNet):
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        feats = []
        for block in self.trunk_output:
            x = block(x)
            feats.append(x)
        return self.fc(torch.flatten(self.avgpool(x), 1)), feats


def _sequential_stage_ends(features: nn.Sequential) -> list[int]:
    """Indices of the last child at each resolution, from the strides of the convs inside each child.

    Decided from the architecture, not from a forward pass, so the list length never depends on the
    input size (tiny inputs stop shrinking at 1x1 but still give the same stages).
    """
    strides = [max((m.stride[0] for m in child.modules() if isinstance(m, nn.Conv2d)), default=1)
               for child in features]
    ends = [i for i in range(len(strides) - 1) if strides[i + 1] > 1] + [len(strides) - 1]
    return ends[-4:]  # the /4, /8, /16 and /32 stages (the /2 stem is dropped)


class _FeaturesClassifierMixin:
    """For models that are `features` (Sequential) -> pool -> `classifier`; build sets stage_ends.

    (No class-level annotations here: TorchScript would try to read them as attribute types.)
    """

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ends = self.stage_ends  # type: ignore[attr-defined]
        feats = []
        for i, child in enumerate(self.features):  # type: ignore[attr-defined]
            x = child(x)
            if i in ends:
                feats.append(x)
        pooled = nn.functional.adaptive_avg_pool2d(x, 1)  # mobilenet_v2 has no avgpool module
        return self.classifier(torch.flatten(pooled, 1)), feats  # type: ignore[attr-defined]


class _MobileNetV2Features(_FeaturesClassifierMixin, tvm.MobileNetV2):
    pass


class _MobileNetV3Features(_FeaturesClassifierMixin, tvm.MobileNetV3):
    pass


class _EfficientNetFeatures(_FeaturesClassifierMixin, tvm.EfficientNet):
    pass


FEATURE_CLASSES: dict[str, type[nn.Module]] = {
    "resnet18": _ResNetFeatures, "resnet34": _ResNetFeatures, "resnet50": _ResNetFeatures,
    "mobilenet_v2": _MobileNetV2Features,
    "mobilenet_v3_small": _MobileNetV3Features, "mobilenet_v3_large": _MobileNetV3Features,
    "efficientnet_b0": _EfficientNetFeatures,
    "shufflenet_v2_x1_0": _ShuffleNetFeatures,
    "regnet_y_400mf": _RegNetFeatures,
}


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    model.set_submodule(name, new)


# RegNet's builder computes its stage widths with torch ops, which fail on the meta device (used by
# the API to get parameter shapes without allocating them): build those on the CPU, then move.
_WIDTHS_FROM_TENSOR_MATH = {"regnet_y_400mf"}


def build_torchvision(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    if arch in _WIDTHS_FROM_TENSOR_MATH and torch.get_default_device().type == "meta":
        with torch.device("cpu"):
            return build_torchvision(arch, num_classes, in_channels).to("meta")
    model = tvm.get_model(arch, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    features_class = FEATURE_CLASSES[arch]
    if not isinstance(model, features_class.__bases__[-1]):
        raise TypeError(f"torchvision returned {type(model).__name__} for {arch}")
    model.__class__ = features_class  # same fields and parameters; adds forward_features only
    if isinstance(model, _FeaturesClassifierMixin):
        model.stage_ends = _sequential_stage_ends(model.features)
    return model
