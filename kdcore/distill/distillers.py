"""Distiller modules: one per method, all with forward_train(images, targets, epoch, label_smoothing).

The student is a registered submodule; the teacher is deliberately NOT registered (kept in __dict__),
so distiller.parameters(), .state_dict(), .train() and .to() never touch it: the trainer moves the
teacher itself and keeps it in eval mode. `epoch` is the trainer's 0-based epoch index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.distill import losses
from kdcore.errors import KDError
from kdcore.spec import DistillSpec


class Distiller(nn.Module):
    needs_teacher = True

    def __init__(self, cfg: DistillSpec, student: nn.Module, teacher: nn.Module | None):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise KDError(f"distillation method {cfg.method!r} needs a teacher", code="distill_error")
        self.cfg = cfg
        self.student = student
        if teacher is not None:
            teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # bypass nn.Module registration (see module doc)

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that are not the student's (the trainer adds them to the optimizer)."""
        return []

    def _teacher_eval(self) -> nn.Module:
        teacher = self.teacher
        if teacher.training:  # defensive: BN statistics of the teacher must never move
            teacher.eval()
        return teacher

    def _ce(self, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.forward_train(images, targets, epoch, label_smoothing)


class Vanilla(Distiller):
    """Cross-entropy only: the baseline student. A teacher, if given, is ignored."""

    needs_teacher = False

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits = self.student(images)
        return logits, {"ce": self._ce(logits, targets, label_smoothing)}


class _LogitDistiller(Distiller):
    def _both_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        teacher = self._teacher_eval()
        with torch.no_grad():
            teacher_logits = teacher(images)
        return self.student(images), teacher_logits


class KD(_LogitDistiller):
    """(1 - alpha) * CE + alpha * T^2 * KL(teacher || student) at temperature T."""

    kl_fn = staticmethod(losses.kd_kl)

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, teacher_logits = self._both_logits(images)
        alpha, temperature = self.cfg.alpha, self.cfg.temperature
        return logits, {
            "ce": (1.0 - alpha) * self._ce(logits, targets, label_smoothing),
            "kd": alpha * self.kl_fn(logits, teacher_logits, temperature),
        }


class KDLogitStandardization(KD):
    """KD on per-sample standardized logits (Sun et al. 2024); same weighting as KD."""

    kl_fn = staticmethod(losses.kd_ls_kl)


class DKD(_LogitDistiller):
    """CE + min((epoch + 1) / warmup_epochs, 1) * (dkd_alpha * TCKD + dkd_beta * NCKD).

    The trainer's epoch is 0-based, so (epoch + 1) reproduces mdistiller's 1-based epoch / warmup.
    """

    def warmup_factor(self, epoch: int) -> float:
        warmup = self.cfg.warmup_epochs
        return 1.0 if warmup <= 0 else min((epoch + 1) / warmup, 1.0)

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, teacher_logits = self._both_logits(images)
        tckd, nckd = losses.dkd_parts(logits, teacher_logits, targets, self.cfg.temperature)
        ramp = self.warmup_factor(epoch)
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "tckd": ramp * self.cfg.dkd_alpha * tckd,
            "nckd": ramp * self.cfg.dkd_beta * nckd,
        }


class _FeatureDistiller(Distiller):
    def _both_features(self, images: torch.Tensor):
        teacher = self._teacher_eval()
        with torch.no_grad():
            _, teacher_feats = teacher.forward_features(images)
        logits, student_feats = self.student.forward_features(images)
        return logits, student_feats, teacher_feats


def _sample_features(model: nn.Module, sample_input: torch.Tensor) -> list[torch.Tensor]:
    """Stage maps of a sample batch, in eval mode so BN statistics do not move; restores the mode.

    Runs where the model's parameters are: the caller may not have moved the student yet.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.forward_features(sample_input.to(next(model.parameters()).device))[1]
    finally:
        model.train(was_training)


class FitNet(_FeatureDistiller):
    """CE + feature_weight * MSE(regressor(student stage), teacher stage).

    hint_stage indexes each network's stage list; where it is past one network's last stage it is
    clamped to that network's last stage; past both, it is an error.
    """

    def __init__(self, cfg: DistillSpec, student: nn.Module, teacher: nn.Module, sample_input: torch.Tensor):
        super().__init__(cfg, student, teacher)
        s_feats = _sample_features(student, sample_input)
        t_feats = _sample_features(teacher, sample_input)
        if cfg.hint_stage >= max(len(s_feats), len(t_feats)):
            raise KDError(
                f"distill.hint_stage={cfg.hint_stage} is out of range: the student has {len(s_feats)} "
                f"feature stages and the teacher {len(t_feats)} (0-based)", code="distill_error",
            )
        self.student_stage = min(cfg.hint_stage, len(s_feats) - 1)
        self.teacher_stage = min(cfg.hint_stage, len(t_feats) - 1)
        c_s, c_t = s_feats[self.student_stage].shape[1], t_feats[self.teacher_stage].shape[1]
        param = next(student.parameters())  # the regressor lives with the student (trainer moves both)
        self.regressor = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t)).to(
            device=param.device, dtype=param.dtype
        )

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.regressor.parameters())

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, s_feats, t_feats = self._both_features(images)
        hint = losses.hint_mse(self.regressor(s_feats[self.student_stage]), t_feats[self.teacher_stage])
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "hint": self.cfg.feature_weight * hint,
        }


class AttentionTransfer(_FeatureDistiller):
    """CE + feature_weight / 2 * sum over stage pairs of mean((a_s - a_t)^2).

    Stages are paired from the end: the last k of each network, k = the shorter list's length.
    """

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, s_feats, t_feats = self._both_features(images)
        k = min(len(s_feats), len(t_feats))
        at = losses.attention_transfer(s_feats[-k:], t_feats[-k:], self.cfg.at_p)
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "at": self.cfg.feature_weight / 2.0 * at,
        }
