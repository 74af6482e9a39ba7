"""The per-architecture figures of kdservice/estimate.py's ARCH_COSTS, measured on the real models.

For each arch (10 classes, 3 channels, a batch of 2 at --size px): parameters; activations = output
elements of every leaf module per input pixel per image (what training keeps for the backward pass);
forward FLOPs per input pixel per image (torch.utils.flop_counter). Measured on the meta device: shapes
only, so it takes seconds on any machine and the figures do not depend on it.

    python bench/arch_costs.py [--size 64]

Prints one JSON object {arch: [params, activations_per_pixel, flops_per_pixel]}; paste it into
ARCH_COSTS when an architecture is added or changed (tests/service/test_estimate.py compares the two).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdcore.models import MODELS, build_model


def measure(arch: str, size: int = 64) -> tuple[int, float, float]:
    """(params, activations per pixel, forward FLOPs per pixel) of one image of size x size pixels."""
    with torch.device("meta"):
        model = build_model(arch, 10, 3, size)
    activations = 0

    def count(_module, _inputs, output) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    batch = 2  # batch norm in training mode needs more than one value per channel
    with FlopCounterMode(display=False) as flops:
        model(torch.empty(batch, 3, size, size, device="meta"))
    for hook in hooks:
        hook.remove()
    pixels = batch * size * size
    params = sum(p.numel() for p in model.parameters())
    return params, activations / pixels, flops.get_total_flops() / pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    table = {}
    for arch in MODELS:
        params, acts, flops = measure(arch, args.size)
        table[arch] = [params, round(acts, 1), round(flops)]
    print(json.dumps(table))


if __name__ == "__main__":
    main()
