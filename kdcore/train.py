"""The trainer: one loop for the teacher, the baseline student and the distilled student.

What makes it exact to resume: the data order and augmentation of epoch e depend only on (seed, e)
(BatchLoader.set_epoch), and the checkpoint written after every epoch holds the model, optimizer,
scheduler, extra loss parameters, the best-so-far weights and the RNG states.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.atomic import atomic_path
from kdcore.callbacks import Callbacks
from kdcore.data import BatchLoader, ImageData
from kdcore.distill import Distiller
from kdcore.errors import Cancelled, KDError
from kdcore.evaluate import predict_logits
from kdcore.spec import TrainRecipe, resolve_flip

CANCEL_POLL_STEPS = 5  # should_cancel is cheap for callers that cache; every 5 steps keeps cancel < 1 s


@dataclass
class TrainSummary:
    best_epoch: int  # 1-based epoch whose weights were kept (best validation accuracy)
    best_val_acc: float
    last_val_acc: float
    epochs: int
    seconds: float
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    last_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # last epoch's weights

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "last_state"}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. 'auto' is bf16 on CUDA (no loss scaling needed), fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16


def lr_lambda(recipe: TrainRecipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimizer step: linear warm-up, then cosine, multistep or constant."""
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    milestones = recipe.milestones or [round(recipe.epochs * f) for f in (5 / 8, 3 / 4, 7 / 8)]
    milestone_steps = sorted(m * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if recipe.schedule == "multistep":
            return recipe.gamma ** sum(step >= m for m in milestone_steps)
        return 1.0

    return factor


def make_optimizer(params: list[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    """SGD (or AdamW) over params. By default the KD benchmark recipe (mdistiller, RepDistiller): weight
    decay on every parameter, plain momentum; train.decay_norm_and_bias=false exempts 1-D parameters
    (norm scales and shifts, biases), train.nesterov=true uses Nesterov momentum."""
    if recipe.decay_norm_and_bias:
        groups = [{"params": params, "weight_decay": recipe.weight_decay}]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


AUGMIX_JSD_WEIGHT = 12.0  # the AugMix reference's weight of the consistency term (cifar.py)


def jensen_shannon(logits_clean: torch.Tensor, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """AugMix's consistency loss (Hendrycks et al. 2020, eq. 3) times AUGMIX_JSD_WEIGHT: the mean of the
    three KL(p_view || mixture), mixture = the views' mean, clamped to [1e-7, 1] as in the reference."""
    p_clean, p_a, p_b = (F.softmax(z.float(), dim=1) for z in (logits_clean, logits_a, logits_b))
    log_mixture = torch.clamp((p_clean + p_a + p_b) / 3.0, 1e-7, 1.0).log()
    kl = sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in (p_clean, p_a, p_b))
    return AUGMIX_JSD_WEIGHT * kl / 3.0


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _state_on_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def compile_models(distiller: Distiller, device: torch.device) -> None:
    """torch.compile in place (nn.Module.compile), so state_dict keys and checkpoints stay those of the
    plain model. The teacher never changes during distillation, so it is compiled with freezing: inductor
    folds its BatchNorms into the convolutions and prepacks the weights. On the 2-core CPU here (torch
    2.14.1) this made the resnet56 teacher's forward ~25% faster and the resnet20 student's forward+backward
    ~20% faster (fused BN/ReLU/add), after ~40 s of compiling each: worth it for long runs only."""
    # Inductor builds C++ kernels on CPU (and Triton's launchers on CUDA): fail now, not mid-compile.
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise KDError("train.compile needs a C++ compiler (g++ or clang++) on the worker; install one or "
                      "set train.compile to false", code="compile_unavailable")
    if distiller.teacher is not None:
        distiller.teacher.compile(options={"freezing": True})
    distiller.student.compile()


def _extra_state(distiller: Distiller) -> dict[str, torch.Tensor]:
    """The distiller's own trainable state (e.g. FitNet's regressor), without the two networks."""
    nets = {id(distiller.student), id(distiller.teacher)}
    skip = tuple(f"{name}." for name, child in distiller.named_children() if id(child) in nets)
    return {k: v for k, v in distiller.state_dict().items() if not k.startswith(skip)}


def validation_accuracy(model: nn.Module, data: ImageData, device: torch.device) -> float:
    logits = predict_logits(model, data.val_x, mean=data.mean, std=data.std, device=device)
    return (logits.argmax(1) == data.val_y).float().mean().item()


def train(
    phase: str,
    distiller: Distiller,
    data: ImageData,
    recipe: TrainRecipe,
    *,
    device: torch.device,
    checkpoint: Path,
    callbacks: Callbacks,
    report_step: Callable[[int, int, int, int], None],
) -> TrainSummary:
    """Train distiller.student on data.train, select on data.val; leaves the best weights loaded.

    report_step(epoch, step, steps, epochs) is called every step (the caller turns it into progress).
    """
    student = distiller.student
    # channels_last everywhere: measured 1.34x on the 2-core CPU for the resnet56 -> resnet20 step; also helps GPUs.
    student.to(device, memory_format=torch.channels_last)
    distiller.to(device)
    if distiller.teacher is not None:
        distiller.teacher.to(device, memory_format=torch.channels_last).eval()
    if recipe.compile:
        compile_models(distiller, device)
    loader = BatchLoader(
        data.train_x, data.train_y, batch_size=min(recipe.batch_size, len(data.train_y)), shuffle=True,
        drop_last=True, augment=recipe.augment, flip=resolve_flip(recipe.flip, data.source), mean=data.mean,
        std=data.std, device=device, seed=recipe.seed, channels_last=True, augmix_jsd=recipe.augmix_jsd,
    )
    steps = len(loader)
    callbacks.on_log(f"{phase}: {distiller.describe()}")
    params = list(student.parameters()) + list(distiller.extra_parameters())
    optimizer = make_optimizer(params, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe, steps))
    autocast_dtype = resolve_precision(recipe.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    step_fn = make_train_step(distiller, optimizer, scaler, recipe, device, autocast_dtype)

    start_epoch, best_val, best_epoch, best_state, history = 0, -1.0, 0, None, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # our own file, still no pickle
        student.load_state_dict(state["model"])
        distiller.load_state_dict(state["distiller"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        start_epoch, best_val, best_epoch = state["epoch"], state["best_val"], state["best_epoch"]
        best_state, history = state["best_state"], state["history"]
        callbacks.on_log(f"{phase}: resumed from checkpoint after epoch {start_epoch}")

    started = time.perf_counter()
    for epoch in range(start_epoch, recipe.epochs):
        student.train()
        loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        part_sums: dict[str, torch.Tensor] = {}
        for step, (images, targets) in enumerate(loader):
            if step % CANCEL_POLL_STEPS == 0 and callbacks.should_cancel():
                raise Cancelled()
            loss, parts = step_fn(images, targets, epoch)
            scheduler.step()
            loss_sum += loss.detach()
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value.detach()
            report_step(epoch, step + 1, steps, recipe.epochs)
        val_acc = validation_accuracy(student, data, device)
        record = {
            "epoch": epoch + 1, "train_loss": (loss_sum / steps).item(), "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"loss_{k}": (v / steps).item() for k, v in part_sums.items()},
        }
        history.append(record)
        if val_acc > best_val:
            best_val, best_epoch, best_state = val_acc, epoch + 1, _state_on_cpu(student)
        _save_atomic({
            "model": student.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "distiller": _extra_state(distiller), "rng": _rng_state(device), "epoch": epoch + 1, "best_val": best_val,
            "best_epoch": best_epoch, "best_state": best_state, "history": history,
        }, checkpoint)
        callbacks.on_epoch_end(phase, epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
        if callbacks.should_cancel():
            raise Cancelled()

    last_val, last_state = history[-1]["val_acc"], _state_on_cpu(student)
    if best_state is not None:
        student.load_state_dict(best_state)
    return TrainSummary(
        best_epoch=best_epoch, best_val_acc=best_val, last_val_acc=last_val, epochs=recipe.epochs,
        seconds=time.perf_counter() - started, resumed_from_epoch=start_epoch, history=history,
        last_state=last_state,
    )


def make_train_step(distiller, optimizer, scaler, recipe: TrainRecipe, device: torch.device, autocast_dtype):
    """One optimisation step; returns (loss, named parts)."""
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    )

    def step(images: torch.Tensor, targets: torch.Tensor, epoch: int):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            # With augmix_jsd the loader stacks [clean, aug1, aug2] over the B labels: the distiller puts
            # every view through the student but CE and distillation on the clean view only (the rows
            # with targets); the Jensen-Shannon term ties the three views, as in the AugMix reference.
            logits, parts = distiller.forward_train(images, targets, epoch, label_smoothing=recipe.label_smoothing)
            if recipe.augmix_jsd:
                parts["jsd"] = jensen_shannon(*logits.chunk(3))
            loss = sum(parts.values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss, parts

    return step
