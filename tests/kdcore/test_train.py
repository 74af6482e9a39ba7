"""kdcore.train: the optimizer recipe and the AugMix JSD step against hand-written references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore.distill import build_distiller
from kdcore.models import build_model
from kdcore.spec import DistillSpec, TrainRecipe
from kdcore.train import make_optimizer, make_train_step


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))


def _step_with_gradient(net: nn.Module, recipe: TrainRecipe, grads: dict[str, torch.Tensor], steps: int) -> None:
    optimizer = make_optimizer(list(net.parameters()), recipe)
    for _ in range(steps):
        for name, p in net.named_parameters():
            p.grad = grads[name].clone()
        optimizer.step()


@pytest.mark.parametrize(("options", "decays_1d", "nesterov"), [
    ({}, True, False),                                        # the KD benchmark recipe (mdistiller, CRD)
    ({"decay_norm_and_bias": False}, False, False),
    ({"nesterov": True}, True, True),
])
def test_sgd_matches_the_hand_written_update(options: dict, decays_1d: bool, nesterov: bool) -> None:
    recipe = TrainRecipe(lr=0.1, momentum=0.9, weight_decay=0.01, **options)
    net = _net()
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
             for i, (n, p) in enumerate(net.named_parameters())}
    _step_with_gradient(net, recipe, grads, steps=2)
    for name, p in net.named_parameters():
        wd = 0.01 if (p.ndim > 1 or decays_1d) else 0.0
        w, v = start[name].clone(), None
        for k in range(2):  # SGD with momentum as PyTorch (and the reference recipes) define it
            g = grads[name] + wd * w
            v = g.clone() if k == 0 else 0.9 * v + g
            w = w - 0.1 * (g + 0.9 * v if nesterov else v)
        assert torch.allclose(p.detach(), w, atol=1e-6), name


def test_nesterov_needs_sgd_with_momentum() -> None:
    with pytest.raises(ValueError, match="train.nesterov"):
        TrainRecipe(nesterov=True, momentum=0.0)
    with pytest.raises(ValueError, match="train.nesterov"):
        TrainRecipe(nesterov=True, optimizer="adamw")


def test_augmix_jsd_step_matches_the_augmix_reference_with_kd_on_the_clean_view() -> None:
    """google-research/augmix cifar.py: the three views go through the net as one batch, CE on the clean
    logits only, plus 12 * mean KL(p_view || clamp(mixture)); the KD term here also takes the clean view."""
    torch.manual_seed(0)
    teacher, student = build_model("resnet8", 5, 1, 8), build_model("resnet8", 5, 1, 8)
    gen = torch.Generator().manual_seed(2)
    images, targets = torch.randn(12, 1, 8, 8, generator=gen), torch.tensor([0, 1, 2, 4])  # 3 views of 4
    recipe = TrainRecipe(augment="augmix", augmix_jsd=True, precision="fp32")
    distiller = build_distiller(DistillSpec(method="kd"), student, teacher, images[:4], epochs=recipe.epochs)
    distiller.train()
    with torch.no_grad():
        clean, aug1, aug2 = student(images).split(4)  # train-mode BN over all three views, as the step does
        t = teacher.eval()(images[:4])
        ce = -F.log_softmax(clean, 1)[torch.arange(4), targets].mean()
        p_s, p_t = F.log_softmax(clean / 4.0, 1), F.softmax(t / 4.0, 1)
        kd = (p_t * (p_t.log() - p_s)).sum(1).mean() * 16.0
        p = [F.softmax(z, 1) for z in (clean, aug1, aug2)]
        log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1.0).log()
        jsd = 12.0 * sum((q * (q.log() - log_m)).sum(1).mean() for q in p) / 3.0
    optimizer = make_optimizer(list(distiller.parameters()), recipe)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, parts = make_train_step(distiller, optimizer, scaler, recipe, torch.device("cpu"), None)(
        images, targets, 0
    )
    assert set(parts) == {"ce", "kd", "jsd"}
    assert parts["ce"].item() == pytest.approx(0.1 * ce.item(), rel=1e-5)
    assert parts["kd"].item() == pytest.approx(0.9 * kd.item(), rel=1e-5)
    assert parts["jsd"].item() == pytest.approx(jsd.item(), rel=1e-5)
    assert loss.item() == pytest.approx((0.1 * ce + 0.9 * kd + jsd).item(), rel=1e-5)
