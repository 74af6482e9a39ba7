"""CIFAR VGG (BN), MobileNetV2 and ShuffleNetV2 as in the CRD / mdistiller model zoos.

- vgg8/11/13: conv blocks with BN, max-pool between blocks, no 4th pool below 64 px, one linear head.
- mobilenetv2: CRD's "MobileNetV2" student (expansion 6, width 0.5, stride-2 stem, 1280-d head).
- shufflenetv2: CRD's ShuffleV2 (net size 1: 116/232/464 channels, 3/7/3 units, 1x1 stem).
Global pooling is adaptive everywhere so any input size >= 8 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.models.cifar_resnet import init_weights

VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def _vgg_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    # The block's last ReLU is applied in forward, as in CRD (keeps the pre-activation reachable).
    return nn.Sequential(*layers[:-1])


class CifarVGG(nn.Module):
    def __init__(self, config: list[list[int]], num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        channels = [in_channels] + [block[-1] for block in config]
        self.block0 = _vgg_block(config[0], channels[0])
        # Each stage is (pool, conv block). CRD pools before the last block only for 64 px inputs;
        # decided here so forward has no branch.
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool2d(2, 2) if i < 3 or image_size >= 64 else nn.Identity(),
                _vgg_block(config[i + 1], channels[i + 1]),
            )
            for i in range(4)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats: list[torch.Tensor] = []
        x = F.relu(self.block0(x))
        for stage in self.stages:
            x = F.relu(stage(x))
            feats.append(x)
        logits = self.classifier(torch.flatten(self.avgpool(x), 1))
        return logits, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def _conv_bn_relu(inp: int, out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_residual = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride); expansion 6 except the first group.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int, in_channels: int, width: float = 0.5, last_channel: int = 1280):
        super().__init__()
        channels = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        groups = []
        for expand, c, repeats, stride in self.SETTINGS:
            out = int(c * width)
            layers = []
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        self.stage_ends = [1, 2, 4, 6]  # feature taps after these groups (CRD's f1..f4)
        self.conv2 = _conv_bn_relu(channels, last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channel, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv1(x)
        feats: list[torch.Tensor] = []
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in self.stage_ends:
                feats.append(x)
        logits = self.classifier(torch.flatten(self.avgpool(self.conv2(x)), 1))
        return logits, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride-1 unit: half the channels pass through, the other half go through 1x1-dw3x3-1x1."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.half = half
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([x[:, : self.half], self.branch(x[:, self.half :])], 1)
        return channel_shuffle(out, 2)


class ShuffleDownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input; outputs are concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class CifarShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...] = (116, 232, 464, 1024),
                 units: tuple[int, ...] = (3, 7, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        channels = 24
        stages = []
        for width, n in zip(widths[:3], units, strict=True):
            repeats = [ShuffleUnit(width) for _ in range(n)]
            stages.append(nn.Sequential(ShuffleDownUnit(channels, width), *repeats))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(channels, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        out = F.relu(self.bn2(self.conv2(f3)))
        logits = self.linear(torch.flatten(self.avgpool(out), 1))
        return logits, [f1, f2, f3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
