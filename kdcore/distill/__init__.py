"""Distillation methods: METHODS registry and build_distiller; losses live in kdcore.distill.losses."""

from __future__ import annotations

import torch
from torch import nn

from kdcore.distill.distillers import (
    DKD,
    KD,
    AttentionTransfer,
    Distiller,
    FitNet,
    KDLogitStandardization,
    Vanilla,
)
from kdcore.spec import DistillSpec

METHODS: dict[str, type[Distiller]] = {
    "none": Vanilla,
    "kd": KD,
    "dkd": DKD,
    "kd_ls": KDLogitStandardization,
    "fitnet": FitNet,
    "at": AttentionTransfer,
}


def build_distiller(cfg: DistillSpec, student: nn.Module, teacher: nn.Module | None,
                    sample_input: torch.Tensor, *, epochs: int) -> Distiller:
    """sample_input: a small batch on the training device (sizes FitNet's regressor; others ignore it).
    epochs: the run's length (defaults that scale with it, such as DKD's warm-up, are resolved here)."""
    cls = METHODS[cfg.method]
    if cls is FitNet:
        return FitNet(cfg, student, teacher, epochs, sample_input)
    return cls(cfg, student, teacher, epochs)


__all__ = ["METHODS", "Distiller", "build_distiller"]
