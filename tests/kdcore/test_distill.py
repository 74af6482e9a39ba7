"""kdcore.distill: each loss against a hand computation, and the distillers on tiny real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdcore.distill import METHODS, build_distiller, losses
from kdcore.errors import KDError
from kdcore.models import build_model
from kdcore.spec import DISTILL_METHODS, DistillSpec

S = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
T = np.array([[1.5, 0.3, 0.2], [0.0, 3.0, 1.0]])
Y = np.array([0, 2])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row."""
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def test_kd_kl_matches_hand_computation() -> None:
    temp = 2.0
    expected = _kl_rows(_softmax(T / temp), _softmax(S / temp)).mean() * temp**2
    assert losses.kd_kl(_t(S), _t(T), temp).item() == pytest.approx(expected, rel=1e-5)


def test_kd_kl_written_out_for_one_pair() -> None:
    # Two classes, T = 1: teacher p = softmax([0, ln 3]) = [1/4, 3/4], student q = [1/2, 1/2].
    expected = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    got = losses.kd_kl(torch.zeros(1, 2), torch.tensor([[0.0, float(np.log(3.0))]]), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_ls_matches_hand_computation() -> None:
    temp, eps = 3.0, 1e-7

    def standardize(z: np.ndarray) -> np.ndarray:
        return (z - z.mean(axis=1, keepdims=True)) / (eps + z.std(axis=1, ddof=1, keepdims=True))

    expected = _kl_rows(_softmax(standardize(T) / temp), _softmax(standardize(S) / temp)).mean() * temp**2
    assert losses.kd_ls_kl(_t(S), _t(T), temp).item() == pytest.approx(expected, rel=1e-5)
    # Invariant to shifting and scaling either network's logits (the point of standardizing).
    shifted = losses.kd_ls_kl(_t(S * 5.0 + 3.0), _t(T * 0.2 - 1.0), temp).item()
    assert shifted == pytest.approx(expected, rel=1e-4)


def test_dkd_parts_match_mdistiller_formulation_in_numpy() -> None:
    temp = 2.0
    gt = np.eye(3)[Y]
    p_s, p_t = _softmax(S / temp), _softmax(T / temp)
    # TCKD: binary [p_target, 1 - p_target]; NCKD: softmax with the target logit pushed to -1000.
    b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], axis=1)
    b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], axis=1)
    tckd = _kl_rows(b_t, b_s).sum() / 2 * temp**2
    q_s = _softmax(S / temp - 1000.0 * gt)
    q_t = _softmax(T / temp - 1000.0 * gt)
    keep = gt == 0
    nckd = sum(_kl_rows(q_t[i : i + 1, keep[i]], q_s[i : i + 1, keep[i]])[0] for i in range(2)) / 2 * temp**2
    got_tckd, got_nckd = losses.dkd_parts(_t(S), _t(T), torch.tensor(Y), temp)
    assert got_tckd.item() == pytest.approx(tckd, rel=1e-5)
    assert got_nckd.item() == pytest.approx(nckd, rel=1e-5)


def test_hint_mse_pools_the_larger_map() -> None:
    student = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) / 10
    teacher = torch.ones(2, 3, 2, 2)
    s = student.numpy()
    pooled = s.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))  # 2x2 average pooling by hand
    expected = ((pooled - 1.0) ** 2).mean()
    assert losses.hint_mse(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert losses.hint_mse(teacher, student).item() == pytest.approx(expected, rel=1e-6)


def test_attention_transfer_matches_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    fs = [torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 5, 2, 2, generator=gen)]
    ft = [torch.randn(2, 6, 4, 4, generator=gen), torch.randn(2, 4, 2, 2, generator=gen)]

    def att(f: np.ndarray) -> np.ndarray:
        a = (np.abs(f) ** 2).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = sum(((att(a.numpy()) - att(b.numpy())) ** 2).mean() for a, b in zip(fs, ft, strict=True))
    assert losses.attention_transfer(fs, ft, 2.0).item() == pytest.approx(expected, rel=1e-5)
    assert losses.attention_transfer(fs, fs, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_registry_matches_spec() -> None:
    assert tuple(METHODS) == DISTILL_METHODS


@pytest.fixture(scope="module")
def nets() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    teacher, student = build_model("resnet20", 10), build_model("resnet8", 10)
    images = torch.randn(2, 3, 32, 32)
    return teacher, student, images, torch.tensor([1, 7])


@pytest.mark.parametrize("method", DISTILL_METHODS)
def test_each_method_backprops_into_student_and_extras_only(method: str, nets) -> None:
    teacher, student, images, targets = nets
    teacher.train()  # a careless caller: building must put the teacher in eval mode
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = build_distiller(DistillSpec(method=method), student, teacher, images, epochs=240)
    assert not teacher.training
    student.train()
    student.zero_grad(set_to_none=True)
    logits, parts = distiller.forward_train(images, targets, epoch=0)
    assert logits.shape == (2, 10) and parts and "ce" in parts
    total = sum(parts.values())
    assert total.dim() == 0 and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.extra_parameters())
    assert all(p.grad is None for p in teacher.parameters())
    # Teacher weights and BN statistics untouched; its parameters are not the distiller's.
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for p in distiller.parameters())
    distiller.train()
    assert not teacher.training
    if method == "fitnet":
        assert len(distiller.extra_parameters()) == 4  # conv weight and bias, BN weight and bias
    else:
        assert distiller.extra_parameters() == []


def test_kd_with_alpha_zero_is_cross_entropy(nets) -> None:
    teacher, student, images, targets = nets
    student.eval()
    distiller = build_distiller(DistillSpec(method="kd", alpha=0.0), student, teacher, images, epochs=1)
    logits, parts = distiller.forward_train(images, targets, 0, label_smoothing=0.1)
    ce = F.cross_entropy(student(images), targets, label_smoothing=0.1)
    assert sum(parts.values()).item() == pytest.approx(ce.item(), rel=1e-6)
    assert parts["kd"].item() == 0.0


def test_kd_parts_weighted_by_alpha(nets) -> None:
    teacher, student, images, targets = nets
    student.eval()
    cfg = DistillSpec(method="kd", alpha=0.75, temperature=3.0)
    distiller = build_distiller(cfg, student, teacher, images, epochs=1)
    logits, parts = distiller.forward_train(images, targets, 0)
    with torch.no_grad():
        t_logits = teacher(images)
    assert parts["kd"].item() == pytest.approx(0.75 * losses.kd_kl(logits, t_logits, 3.0).item(), rel=1e-5)
    assert parts["ce"].item() == pytest.approx(0.25 * F.cross_entropy(logits, targets).item(), rel=1e-5)


def test_dkd_warmup_ramps_linearly_from_the_zero_based_epoch(nets) -> None:
    teacher, student, images, targets = nets
    student.eval()
    distiller = build_distiller(DistillSpec(method="dkd", warmup_epochs=4), student, teacher, images, epochs=240)
    _, full = distiller.forward_train(images, targets, epoch=3)
    _, later = distiller.forward_train(images, targets, epoch=50)
    _, first = distiller.forward_train(images, targets, epoch=0)
    for name in ("tckd", "nckd"):
        assert full[name].item() > 0
        assert later[name].item() == pytest.approx(full[name].item(), rel=1e-6)
        assert first[name].item() == pytest.approx(full[name].item() / 4, rel=1e-5)
    assert first["ce"].item() == pytest.approx(full["ce"].item(), rel=1e-6)


def test_fitnet_hint_stage_is_clamped_per_network_and_rejected_past_both() -> None:
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", 4, 1, 8), build_model("vgg8", 4, 1, 8)  # 3 and 4 stages
    sample = torch.randn(2, 1, 8, 8)
    distiller = build_distiller(DistillSpec(method="fitnet", hint_stage=3), student, teacher, sample, epochs=1)
    assert (distiller.student_stage, distiller.teacher_stage) == (2, 3)
    conv = distiller.regressor[0]
    assert (conv.in_channels, conv.out_channels) == (64, 512)
    assert (conv.kernel_size, conv.stride) == ((3, 3), (2, 2))  # 2x2 student map onto the 1x1 teacher map
    _, parts = distiller.forward_train(sample, torch.tensor([0, 3]), 0)
    assert torch.isfinite(parts["hint"])
    with pytest.raises(KDError, match="hint_stage"):
        build_distiller(DistillSpec(method="fitnet", hint_stage=4), student, teacher, sample, epochs=1)


def test_baseline_needs_no_teacher_and_the_others_do() -> None:
    student = build_model("resnet8", 3, 1, 8)
    images, targets = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    baseline = build_distiller(DistillSpec(method="none"), student, None, images, epochs=1)
    _, parts = baseline.forward_train(images, targets, 0)
    assert set(parts) == {"ce"}
    with pytest.raises(KDError, match="needs a teacher"):
        build_distiller(DistillSpec(method="kd"), student, None, images, epochs=1)


def test_at_pairs_stages_in_order_from_the_first_as_the_reference_zips_them() -> None:
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", 4, 1, 8), build_model("vgg8", 4, 1, 8)  # 3 and 4 stages
    images = torch.randn(2, 1, 8, 8)
    distiller = build_distiller(DistillSpec(method="at", feature_weight=10.0), student, teacher, images, epochs=1)
    student.eval()
    _, parts = distiller.forward_train(images, torch.tensor([0, 1]), 0)
    with torch.no_grad():
        _, fs = student.forward_features(images)
        _, ft = teacher.forward_features(images)
    expected = 10.0 * losses.attention_transfer(fs, ft[:3], 2.0)
    assert parts["at"].item() == pytest.approx(expected.item(), rel=1e-5)
