"""Pure distillation losses on tensors. Logits are (N, C); feature maps are NCHW.

Every function computes in float32 (logits from bf16/fp16 autocast are upcast) and returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Sun et al. (2024): (z - mean) / (eps + std) per sample; std is unbiased, as in the authors' code."""
    logits = logits.float()
    return (logits - logits.mean(dim=1, keepdim=True)) / (eps + logits.std(dim=1, keepdim=True))


def kd_ls_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KD on standardized logits: T^2 * KL(softmax(std(t)/T) || softmax(std(s)/T)), batchmean."""
    return kd_kl(standardize_logits(student_logits), standardize_logits(teacher_logits), temperature)


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhao et al. (2022), mdistiller's formulation: (TCKD, NCKD), each T^2 * KL summed / batch size.

    TCKD: KL between the binary distributions [p_target, 1 - p_target] of teacher and student.
    NCKD: KL between the distributions over the non-target classes only (target removed, renormalised).
    mdistiller removes the target by subtracting 1000 from its logit; dropping the column is the exact
    version of that. Needs C >= 2 (with C == 2, NCKD is 0).
    """
    n, c = student_logits.shape
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    target_mask = F.one_hot(targets, c).bool()

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(z, dim=1)
        log_p_target = log_p[target_mask]
        log_p_rest = torch.logsumexp(log_p[~target_mask].view(n, c - 1), dim=1)
        return torch.stack([log_p_target, log_p_rest], dim=1)

    tckd = F.kl_div(binary_log_probs(s), binary_log_probs(t), reduction="sum", log_target=True) / n
    s_rest = F.log_softmax(s[~target_mask].view(n, c - 1), dim=1)
    t_rest = F.log_softmax(t[~target_mask].view(n, c - 1), dim=1)
    nckd = F.kl_div(s_rest, t_rest, reduction="sum", log_target=True) / n
    return tckd * temperature**2, nckd * temperature**2


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two NCHW maps down to the other's height and width."""
    h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
    if a.shape[2:] != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if b.shape[2:] != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


def hint_mse(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNet (Romero et al. 2015) hint loss: mean squared error over every element.

    student_feat is the regressor's output, so its channels (and, wherever the reference's regressor
    can, its size) already equal the teacher's; otherwise the larger map is pooled to the smaller.
    """
    s, t = match_spatial(student_feat.float(), teacher_feat.float())
    return F.mse_loss(s, t)


def attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): L2-normalised mean over channels of |f|^p, flattened to (N, H*W).

    |f| rather than f (the reference uses f.pow(p)): equal for p = 2 and for the post-ReLU maps of the
    CIFAR ResNets, and defined for fractional p on the pre-activation maps some networks return.
    """
    return F.normalize(feat.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
                       p: float) -> torch.Tensor:
    """Sum over the stage pairs of mean((a_s - a_t)^2); pairs are given already matched."""
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for f_s, f_t in zip(student_feats, teacher_feats, strict=True):
        f_s, f_t = match_spatial(f_s, f_t)
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total
