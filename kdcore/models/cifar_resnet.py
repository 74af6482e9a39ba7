"""CIFAR ResNets (He et al. 2016) and Wide ResNets (Zagoruyko & Komodakis 2016).

Layouts follow the CRD / mdistiller model zoos, so published teacher/student pairs (resnet56 ->
resnet20, resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2) mean the same networks here. Shortcuts
that change shape are 1x1 conv + BN (option B, as in those repos). The fixed 8x8 average pool of the
originals is adaptive here so any input size >= 8 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming (fan_out) convs, unit BN; linear layers keep torch's default init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_stages(block: type[nn.Module], widths: tuple[int, ...] | list[int], n: int) -> list[nn.Sequential]:
    """Three stages of n blocks with widths[1:] channels from widths[0]; each stage after the first
    halves the resolution in its first block (the CIFAR ResNet / WRN layout)."""
    stages, in_planes = [], widths[0]
    for i, planes in enumerate(widths[1:]):
        blocks = []
        for j in range(n):
            blocks.append(block(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """depth = 6n + 2; widths = (stem, stage1, stage2, stage3)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1, self.layer2, self.layer3 = make_stages(BasicBlock, widths, n)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        logits = self.fc(torch.flatten(self.avgpool(f3), 1))
        return logits, [f1, f2, f3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class WideBlock(nn.Module):
    """Pre-activation block of WRN (BN-ReLU-conv twice); a 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == planes and stride == 1
        self.shortcut = (
            nn.Identity() if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # As in the WRN reference code: a projection shortcut reads the pre-activated input.
        residual = x if self.equal_in_out else self.shortcut(pre)
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k: depth = 6n + 4, widths 16, 16k, 32k, 64k."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1, self.block2, self.block3 = make_stages(WideBlock, widths, n)
        in_planes = widths[-1]
        self.bn = nn.BatchNorm2d(in_planes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv1(x)
        f1 = self.block1(x)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        logits = self.fc(torch.flatten(self.avgpool(F.relu(self.bn(f3))), 1))
        return logits, [f1, f2, f3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
