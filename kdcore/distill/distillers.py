"""Distiller modules: one per method, all with forward_train(images, targets, epoch, label_smoothing).

The student is a registered submodule; the teacher is deliberately NOT registered (kept in __dict__),
so distiller.parameters(), .state_dict(), .train() and .to() never touch it: the trainer moves the
teacher itself and keeps it in eval mode. `epoch` is the trainer's 0-based epoch index.

Every weight and hyper-parameter comes from DistillSpec.settings(epochs): the user's value where given,
else the method's own default (kdcore.spec.METHOD_DEFAULTS, from each paper's reference code).

images may hold more rows than targets: the losses use the first len(targets) rows; the others (AugMix's
augmented views) go through the student in the same batch, so its BatchNorm sees every view as in the
AugMix reference, but get no loss here. The returned logits cover every row.
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

    def __init__(self, cfg: DistillSpec, student: nn.Module, teacher: nn.Module | None, epochs: int):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise KDError(f"distillation method {cfg.method!r} needs a teacher", code="distill_error")
        self.method = cfg.method
        self.settings = cfg.settings(epochs)
        self.ce_weight = float(self.settings["ce_weight"])
        self.student = student
        if teacher is not None:
            teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # bypass nn.Module registration (see module doc)

    def describe(self) -> str:
        """The method and the values it trains with, e.g. 'kd: ce_weight=0.1, kd_weight=0.9, temperature=4'."""
        return f"{self.method}: " + ", ".join(f"{k}={v:g}" for k, v in self.settings.items())

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that are not the student's (the trainer adds them to the optimizer)."""
        return []

    def _teacher_eval(self) -> nn.Module:
        teacher = self.teacher
        if teacher.training:  # defensive: BN statistics of the teacher must never move
            teacher.eval()
        return teacher

    def _ce(self, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """The weighted cross-entropy term on the rows that have targets."""
        ce = F.cross_entropy(logits[: len(targets)].float(), targets, label_smoothing=label_smoothing)
        return self.ce_weight * ce

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.forward_train(images, targets, epoch, label_smoothing)


class Vanilla(Distiller):
    """ce_weight * CE only: the teacher and the baseline student. A teacher, if given, is ignored."""

    needs_teacher = False

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits = self.student(images)
        return logits, {"ce": self._ce(logits, targets, label_smoothing)}


class _LogitDistiller(Distiller):
    def _both_logits(self, images: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of every row; teacher logits of the first n (the rows with targets)."""
        teacher = self._teacher_eval()
        with torch.no_grad():
            teacher_logits = teacher(images[:n])
        return self.student(images), teacher_logits


class KD(_LogitDistiller):
    """ce_weight * CE + kd_weight * T^2 * KL(softmax(t / T) || softmax(s / T)) (Hinton et al. 2015)."""

    kl_fn = staticmethod(losses.kd_kl)

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, teacher_logits = self._both_logits(images, len(targets))
        kl = self.kl_fn(logits[: len(targets)], teacher_logits, float(self.settings["temperature"]))
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "kd": float(self.settings["kd_weight"]) * kl,
        }


class KDLogitStandardization(KD):
    """KD on per-sample standardised logits (Sun et al. 2024); its own defaults (T 2, KD weight 9)."""

    kl_fn = staticmethod(losses.kd_ls_kl)


class DKD(_LogitDistiller):
    """ce_weight * CE + min((epoch + 1) / warmup_epochs, 1) * (dkd_alpha * TCKD + dkd_beta * NCKD).

    The trainer's epoch is 0-based, so (epoch + 1) reproduces mdistiller's 1-based epoch / warmup.
    """

    def warmup_factor(self, epoch: int) -> float:
        warmup = int(self.settings["warmup_epochs"])
        return 1.0 if warmup <= 0 else min((epoch + 1) / warmup, 1.0)

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, teacher_logits = self._both_logits(images, len(targets))
        tckd, nckd = losses.dkd_parts(logits[: len(targets)], teacher_logits, targets,
                                      float(self.settings["temperature"]))
        ramp = self.warmup_factor(epoch)
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "tckd": ramp * float(self.settings["dkd_alpha"]) * tckd,
            "nckd": ramp * float(self.settings["dkd_beta"]) * nckd,
        }


class _FeatureDistiller(Distiller):
    def _both_features(self, images: torch.Tensor, n: int):
        """Student logits of every row; both networks' stage maps of the first n rows."""
        teacher = self._teacher_eval()
        with torch.no_grad():
            _, teacher_feats = teacher.forward_features(images[:n])
        logits, student_feats = self.student.forward_features(images)
        return logits, [f[:n] for f in student_feats], teacher_feats


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


def hint_regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Sequential:
    """FitNet's regressor as the reference builds it (RepDistiller models/util.py ConvReg, also in
    mdistiller): conv + BN + ReLU from the student's stage map to the teacher's channels and size.

    Same size: 1x1 conv; student twice the teacher: 3x3 stride-2 conv; half the teacher: 4x4 stride-2
    transposed conv; otherwise larger: a valid conv of kernel 1 + (student - teacher). Where the
    student's map is smaller but not half (the reference raises there): 1x1 conv, and the loss pools the
    teacher's map down to the student's size.
    """
    (_, c_s, h_s, w_s), (_, c_t, h_t, w_t) = student_shape, teacher_shape
    if h_s == 2 * h_t:
        conv: nn.Module = nn.Conv2d(c_s, c_t, 3, stride=2, padding=1)
    elif 2 * h_s == h_t:
        conv = nn.ConvTranspose2d(c_s, c_t, 4, stride=2, padding=1)
    elif h_s >= h_t and w_s >= w_t:
        conv = nn.Conv2d(c_s, c_t, (1 + h_s - h_t, 1 + w_s - w_t))
    else:
        conv = nn.Conv2d(c_s, c_t, 1)
    return nn.Sequential(conv, nn.BatchNorm2d(c_t), nn.ReLU())


class FitNet(_FeatureDistiller):
    """ce_weight * CE + feature_weight * MSE(regressor(student stage), teacher stage) (Romero et al. 2015).

    hint_stage indexes each network's stage list (forward_features: the stem is not a stage, so the
    default 1 is the reference's hint layer 2). Where it is past one network's last stage it is clamped
    to that network's last stage; past both, it is an error.
    """

    def __init__(self, cfg: DistillSpec, student: nn.Module, teacher: nn.Module, epochs: int,
                 sample_input: torch.Tensor):
        super().__init__(cfg, student, teacher, epochs)
        hint_stage = int(self.settings["hint_stage"])
        s_feats = _sample_features(student, sample_input)
        t_feats = _sample_features(teacher, sample_input)
        if hint_stage >= max(len(s_feats), len(t_feats)):
            raise KDError(
                f"distill.hint_stage={hint_stage} is out of range: the student has {len(s_feats)} "
                f"feature stages and the teacher {len(t_feats)} (0-based)", code="distill_error",
            )
        self.student_stage = min(hint_stage, len(s_feats) - 1)
        self.teacher_stage = min(hint_stage, len(t_feats) - 1)
        param = next(student.parameters())  # the regressor lives with the student (trainer moves both)
        self.regressor = hint_regressor(s_feats[self.student_stage].shape, t_feats[self.teacher_stage].shape).to(
            device=param.device, dtype=param.dtype
        )

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.regressor.parameters())

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, s_feats, t_feats = self._both_features(images, len(targets))
        hint = losses.hint_mse(self.regressor(s_feats[self.student_stage]), t_feats[self.teacher_stage])
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "hint": float(self.settings["feature_weight"]) * hint,
        }


class AttentionTransfer(_FeatureDistiller):
    """ce_weight * CE + feature_weight * sum over stage pairs of mean((a_s - a_t)^2) (Zagoruyko &
    Komodakis 2017, as mdistiller AT.py and RepDistiller train its default beta of 1000).

    Stages are paired in order from the first, as the reference zips its two lists (which leave out the
    stem, as forward_features does): with lists of unequal length the longer one's last stages go unused.
    """

    def forward_train(self, images, targets, epoch, label_smoothing=0.0):
        logits, s_feats, t_feats = self._both_features(images, len(targets))
        k = min(len(s_feats), len(t_feats))
        at = losses.attention_transfer(s_feats[:k], t_feats[:k], float(self.settings["at_p"]))
        return logits, {
            "ce": self._ce(logits, targets, label_smoothing),
            "at": float(self.settings["feature_weight"]) * at,
        }
