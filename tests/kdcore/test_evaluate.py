"""kdcore.evaluate's size figures: FLOPs and MACs against a count by hand over the layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcore.evaluate import forward_flops, macs_from_flops
from kdcore.models import build_model


def _macs_by_hand(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of every convolution and linear layer in one batch-1 forward pass."""
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * k_h * k_w
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize(("arch", "in_channels", "size"), [("resnet20", 3, 32), ("mobilenetv2", 3, 32),
                                                          ("resnet8", 1, 8)])
def test_macs_are_the_multiply_accumulates_and_flops_twice_them(arch: str, in_channels: int, size: int) -> None:
    model = build_model(arch, 10, in_channels, size)
    shape = (in_channels, size, size)
    flops = forward_flops(model, shape)
    assert macs_from_flops(flops) == _macs_by_hand(model, shape)
    assert flops == 2 * _macs_by_hand(model, shape)


def test_resnet20_macs_in_closed_form() -> None:
    # 3x3 convs: stem 3->16 at 32x32; 6 of 16->16 at 32x32; 16->32 and 5 of 32->32 at 16x16; 32->64 and 5
    # of 64->64 at 8x8; two 1x1 projection shortcuts; the 64->100 classifier.
    expected = 9 * (32 * 32 * (3 * 16 + 6 * 16 * 16) + 16 * 16 * (16 * 32 + 5 * 32 * 32)
                    + 8 * 8 * (32 * 64 + 5 * 64 * 64)) + 16 * 16 * 16 * 32 + 8 * 8 * 32 * 64 + 64 * 100
    assert macs_from_flops(forward_flops(build_model("resnet20", 100), (3, 32, 32))) == expected == 40_818_944
