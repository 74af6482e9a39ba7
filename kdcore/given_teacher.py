"""A teacher given as weights (teacher.weights) must fit the job's data: its card is checked first.

Classes (names and order), channels and image size that differ from the data's are refused with
KDError(code="teacher_mismatch") listing the differences: such a teacher would be distilled from and
scored on the wrong terms without any error. A teacher whose card differs only in its normalisation
is used with its own statistics: Renormalized turns the data-normalised batches every model receives
into the teacher's own normalisation, for training (distillation) and evaluation alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from kdcore.cards import DataFacts, ModelCard, card_mismatches, read_card
from kdcore.errors import KDError
from kdcore.export import load_weights_into, save_safetensors

DATA_NORMALIZATION = "data's (train split)"
OWN_NORMALIZATION = "teacher's own (card)"


class Renormalized(nn.Module):
    """`model` fed with its own normalisation while the caller normalises with the data's statistics:
    x_own = (x * std_data + mean_data - mean_own) / std_own per channel, one affine map. Works for
    forward and forward_features; the state_dict is the model's under the prefix "model."."""

    def __init__(self, model: nn.Module, data_mean, data_std, own_mean, own_std):
        super().__init__()
        self.model = model

        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64)[None, :, None, None]

        scale = column(data_std) / column(own_std)
        shift = (column(data_mean) - column(own_mean)) / column(own_std)
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)

    def _own(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._own(x))

    def forward_features(self, x: torch.Tensor):
        return self.model.forward_features(self._own(x))


def with_card_normalization(
    model: nn.Module, card: ModelCard, data_mean: tuple[float, ...], data_std: tuple[float, ...]
) -> tuple[nn.Module, str]:
    """(the model to feed batches normalised with the data's mean/std to, the normalisation it then
    sees): wrapped in Renormalized when its card's mean/std differ from the data's."""
    if "normalization" not in card_mismatches(card, DataFacts(mean=data_mean, std=data_std)):
        return model, DATA_NORMALIZATION
    return Renormalized(model, data_mean, data_std, card.mean, card.std), OWN_NORMALIZATION


def load_given_teacher(
    model: nn.Module, weights: Path, data_card: ModelCard, save_to: Path, log: Callable[[str], None],
) -> nn.Module:
    """Check the card of `weights` against the data (data_card: the card a model trained on this job's
    data would get), load the weights into `model`, save them to `save_to` with the teacher's own card,
    and return the model to distil from. Raises KDError(code="teacher_mismatch") listing what differs."""
    card = read_card(weights)
    if card is None:
        log(f"teacher: {weights.name} carries no model card, so its classes, input size and normalisation "
            "cannot be checked against the data; they are assumed to match")
        card = data_card
    facts = DataFacts(classes=data_card.classes, in_channels=data_card.in_channels,
                      image_size=data_card.image_size, mean=data_card.mean, std=data_card.std)
    mismatches = card_mismatches(card, facts)
    refused = [line for key, line in mismatches.items() if key != "normalization"]
    if refused:
        raise KDError(
            f"teacher.weights {weights.name} does not fit this job's data: " + "; ".join(refused),
            code="teacher_mismatch",
        )
    load_weights_into(model, weights)
    own = replace(data_card, mean=tuple(card.mean), std=tuple(card.std))  # the arch is the spec's
    save_safetensors(model, own, save_to)
    if "normalization" in mismatches:
        log(f"teacher: {mismatches['normalization']}; the teacher is fed inputs normalised with its own "
            "statistics")
    return with_card_normalization(model, own, data_card.mean, data_card.std)[0]
