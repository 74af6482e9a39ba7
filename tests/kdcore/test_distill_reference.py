"""Each method's defaults against an independent re-implementation of its paper's reference code.

The reference formulas below are written out in plain torch from the reference repositories (mdistiller
KD.py / DKD.py / FitNet.py / AT.py and _common.py ConvReg with its cfg.py defaults; logit-standardization-KD
KD.py with tools/train.py --base-temp 2 --kd-weight 9; RepDistiller distiller_zoo and models/util.py); they
call none of kdcore's losses. The networks are the project's CIFAR ResNets (resnet20 -> resnet8) on a
fixed random batch; the stage maps the reference would use are caught with forward hooks on the named
layers, so the tests also check which stage each method reads.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdcore.distill import build_distiller
from kdcore.models import build_model
from kdcore.spec import DistillSpec

N_CLASSES = 10


@pytest.fixture()
def nets() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    teacher, student = build_model("resnet20", N_CLASSES), build_model("resnet8", N_CLASSES)
    with torch.no_grad():  # a confident teacher, so the soft targets are far from uniform
        teacher.fc.weight.mul_(20.0)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return teacher, student, images, torch.tensor([1, 7, 3, 3, 0, 9])


def _caught(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules, filled in by the model's next forward passes (last one wins)."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o))
    return out


def _run(method_spec: DistillSpec, nets, epochs: int = 240, epoch: int = 239):
    """The distiller's forward_train in training mode; returns (parts, student logits, teacher logits)."""
    teacher, student, images, targets = nets
    distiller = build_distiller(method_spec, student, teacher, images, epochs=epochs)
    distiller.train()
    logits, parts = distiller.forward_train(images, targets, epoch)
    with torch.no_grad():
        teacher_logits = teacher(images)
    return distiller, parts, logits.detach(), teacher_logits


def ref_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.log_softmax(logits, dim=1)[torch.arange(len(targets)), targets].mean()


def ref_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """mdistiller KD.py kd_loss: KL(softmax(t/T) || softmax(s/T)) summed over classes, mean over the
    batch, times T^2."""
    log_p_s = F.log_softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    return (p_t * (p_t.log() - log_p_s)).sum(1).mean() * temperature**2


def ref_standardize(z: torch.Tensor) -> torch.Tensor:
    """logit-standardization-KD KD.py normalize: (z - mean) / (1e-7 + std), torch's std (Bessel)."""
    mean = z.mean(dim=-1, keepdim=True)
    std = ((z - mean) ** 2).sum(dim=-1, keepdim=True).div(z.shape[-1] - 1).sqrt()
    return (z - mean) / (1e-7 + std)


def ref_dkd(s, t, targets, alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """mdistiller DKD.py dkd_loss: binary target/rest KL (TCKD) and the non-target KL with the target
    logit pushed down by 1000 (NCKD), each summed, divided by the batch size, times T^2."""
    gt = torch.zeros_like(s).scatter_(1, targets[:, None], 1.0)
    p_s, p_t = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum() / len(targets) * temperature**2
    q_t = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_q_s = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    # kl_div's convention 0 * log 0 = 0 for the pushed-down target column
    nckd = torch.where(q_t > 0, q_t * (q_t.log() - log_q_s), 0.0).sum() / len(targets) * temperature**2
    return alpha * tckd + beta * nckd


def ref_attention(f: torch.Tensor) -> torch.Tensor:
    """mdistiller AT.py / RepDistiller AT.py: normalize(f.pow(2).mean(1).view(N, -1)), p = 2."""
    a = f.pow(2).mean(1).reshape(f.shape[0], -1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


def test_kd_defaults_are_mdistillers_ce_01_kd_09_t4(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="kd"), nets)
    targets = nets[3]
    assert parts["ce"].item() == pytest.approx(0.1 * ref_ce(s, targets).item(), rel=1e-5)
    assert parts["kd"].item() == pytest.approx(0.9 * ref_kd(s, t, 4.0).item(), rel=1e-5)


def test_kd_alpha_is_the_shorthand_for_the_two_weights(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="kd", alpha=0.6, temperature=3.0), nets)
    assert parts["ce"].item() == pytest.approx(0.4 * ref_ce(s, nets[3]).item(), rel=1e-5)
    assert parts["kd"].item() == pytest.approx(0.6 * ref_kd(s, t, 3.0).item(), rel=1e-5)


def test_kd_ls_defaults_are_the_papers_t2_kd_weight_9_ce_01(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="kd_ls"), nets)
    assert parts["ce"].item() == pytest.approx(0.1 * ref_ce(s, nets[3]).item(), rel=1e-5)
    expected = 9.0 * ref_kd(ref_standardize(s), ref_standardize(t), 2.0)
    assert parts["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    # Bessel's correction matters here (10 classes): the biased std gives a measurably different loss.
    biased = lambda z: (z - z.mean(1, keepdim=True)) / (1e-7 + z.std(1, correction=0, keepdim=True))  # noqa: E731
    assert abs(parts["kd"].item() - 9.0 * ref_kd(biased(s), biased(t), 2.0).item()) > 1e-3 * expected.item()


def test_kd_ls_weights_above_one_are_expressible(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="kd_ls", ce_weight=0.5, kd_weight=4.0, temperature=3.0), nets)
    assert parts["ce"].item() == pytest.approx(0.5 * ref_ce(s, nets[3]).item(), rel=1e-5)
    expected = 4.0 * ref_kd(ref_standardize(s), ref_standardize(t), 3.0)
    assert parts["kd"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_dkd_defaults_are_mdistillers_ce_1_alpha_1_beta_8_t4_after_warmup(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="dkd"), nets, epochs=240, epoch=239)
    assert parts["ce"].item() == pytest.approx(ref_ce(s, nets[3]).item(), rel=1e-5)
    expected = ref_dkd(s, t, nets[3], 1.0, 8.0, 4.0)
    assert (parts["tckd"] + parts["nckd"]).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize(("epochs", "epoch", "ramp"), [
    (240, 9, 10 / 20),   # the reference: 1-based epoch 10 of a 20-epoch warm-up
    (240, 19, 1.0),
    (15, 14, 1.0),       # a 15-epoch run ends at the full weight (warm-up round(15 / 12) = 1)
    (30, 0, 1 / 3),      # round(30 * 20 / 240) = round(2.5) = 3, rounded half up
    (30, 2, 1.0),
])
def test_dkd_warmup_scales_with_the_run(nets, epochs: int, epoch: int, ramp: float) -> None:
    _, parts, s, t = _run(DistillSpec(method="dkd"), nets, epochs=epochs, epoch=epoch)
    expected = ramp * ref_dkd(s, t, nets[3], 1.0, 8.0, 4.0)
    assert (parts["tckd"] + parts["nckd"]).item() == pytest.approx(expected.item(), rel=1e-4)


def test_dkd_warmup_set_by_the_user_is_kept(nets) -> None:
    _, parts, s, t = _run(DistillSpec(method="dkd", warmup_epochs=40), nets, epochs=15, epoch=14)
    expected = 15 / 40 * ref_dkd(s, t, nets[3], 1.0, 8.0, 4.0)
    assert (parts["tckd"] + parts["nckd"]).item() == pytest.approx(expected.item(), rel=1e-4)


def test_fitnet_hints_from_the_16x16_stage_through_conv_bn_relu_with_weight_100(nets) -> None:
    teacher, student = nets[0], nets[1]
    s_maps, t_maps = _caught(student, ("layer2",)), _caught(teacher, ("layer2",))
    distiller, parts, s, _ = _run(DistillSpec(method="fitnet"), nets)
    f_s, f_t = s_maps["layer2"], t_maps["layer2"]
    assert f_s.shape[2:] == f_t.shape[2:] == (16, 16)
    conv, bn, relu = distiller.regressor
    assert type(conv) is torch.nn.Conv2d and conv.kernel_size == (1, 1) and conv.bias is not None
    assert type(bn) is torch.nn.BatchNorm2d and type(relu) is torch.nn.ReLU
    # The reference ConvReg in training mode: conv, BN on the batch statistics, ReLU; then MSE.
    z = F.conv2d(f_s, conv.weight, conv.bias)
    z = F.batch_norm(z, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    expected = 100.0 * (F.relu(z) - f_t).pow(2).mean()
    assert parts["hint"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ref_ce(s, nets[3]).item(), rel=1e-5)


@pytest.mark.parametrize(("student_arch", "teacher_arch", "conv_type", "kernel", "stride"), [
    ("resnet8", "resnet20", torch.nn.Conv2d, (1, 1), (1, 1)),            # 16x16 -> 16x16
    ("resnet8", "vgg8", torch.nn.Conv2d, (3, 3), (2, 2)),                # 16x16 -> 8x8
    ("vgg8", "resnet20", torch.nn.ConvTranspose2d, (4, 4), (2, 2)),      # 8x8 -> 16x16
    ("resnet8", "resnet18", torch.nn.Conv2d, (13, 13), (1, 1)),          # 16x16 -> 4x4: kernel 1 + 16 - 4
])
def test_fitnet_regressor_follows_the_reference_convreg(student_arch, teacher_arch, conv_type, kernel,
                                                        stride) -> None:
    torch.manual_seed(0)
    student, teacher = build_model(student_arch, 4), build_model(teacher_arch, 4)
    images = torch.randn(2, 3, 32, 32)
    distiller = build_distiller(DistillSpec(method="fitnet"), student, teacher, images, epochs=1)
    conv = distiller.regressor[0]
    assert type(conv) is conv_type and conv.kernel_size == kernel and conv.stride == stride
    with torch.no_grad():
        _, fs = student.forward_features(images)
        _, ft = teacher.forward_features(images)
        assert distiller.regressor(fs[1]).shape == ft[1].shape  # maps onto the teacher's hint exactly


def test_at_defaults_are_beta_1000_no_halving_p2_over_the_three_stages(nets) -> None:
    teacher, student = nets[0], nets[1]
    stages = ("layer1", "layer2", "layer3")
    s_maps, t_maps = _caught(student, stages), _caught(teacher, stages)
    _, parts, s, _ = _run(DistillSpec(method="at"), nets)
    expected = 1000.0 * sum(
        (ref_attention(s_maps[n]) - ref_attention(t_maps[n])).pow(2).mean() for n in stages
    )
    assert parts["at"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ref_ce(s, nets[3]).item(), rel=1e-5)
