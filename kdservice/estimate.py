"""What a job will cost, estimated at submit without torch: peak memory and training compute.

    memory = data + max over training phases of (16 B x params + 4 B x batch x views x pixels x act/px)
    data   = 2 copies x (train + test images) x channels x pixels      (uint8 arrays kdcore holds in RAM)
    flops  = sum over training phases of 3 x epochs x train images x views x pixels x flops/px
             (+ 1 x the teacher's forward pass for the distilled student)

16 B per parameter: weights, gradients and two optimizer states in fp32. act/px: output elements of every
leaf module per input pixel, kept for the backward pass, in fp32 (bf16 autocast halves it: the estimate is
an upper bound). views: 3 with AugMix's JSD loss, else 1. 3 x forward FLOPs for forward + backward.
Evaluation (clean and corrupted inference) is not counted. Per-pixel figures are the same at every image
size within a few percent for the CIFAR architectures and within 2x for the torchvision ones at small
sizes (their strides round). ARCH_COSTS was measured once by bench/arch_costs.py;
tests/service/test_estimate.py checks it against the real models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdcore.image_files import IMAGE_EXTENSIONS
from kdcore.spec import JobSpec, TrainRecipe
from kdservice.policy import SpecProblem

BYTES_PER_PARAM = 16
BYTES_PER_ACTIVATION = 4
DATA_COPIES = 2
GIB = 1 << 30


@dataclass(frozen=True)
class ArchCost:
    params: int
    activations_per_pixel: float
    flops_per_pixel: int  # forward, per input pixel of one image


# bench/arch_costs.py --size 64 (10 classes, 3 channels)
ARCH_COSTS: dict[str, ArchCost] = {
    "resnet8": ArchCost(78_042, 184.0, 24_416),
    "resnet14": ArchCost(175_258, 324.0, 52_064),
    "resnet20": ArchCost(272_474, 464.0, 79_712),
    "resnet32": ArchCost(466_906, 744.0, 135_008),
    "resnet44": ArchCost(661_338, 1024.0, 190_304),
    "resnet56": ArchCost(855_770, 1304.0, 245_600),
    "resnet110": ArchCost(1_730_714, 2564.0, 494_432),
    "resnet8x4": ArchCost(1_210_410, 736.1, 345_793),
    "resnet32x4": ArchCost(7_410_730, 2976.1, 2_115_265),
    "wrn_16_1": ArchCost(175_066, 268.0, 52_064),
    "wrn_16_2": ArchCost(691_674, 536.0, 197_473),
    "wrn_40_1": ArchCost(563_930, 716.0, 162_656),
    "wrn_40_2": ArchCost(2_243_546, 1432.0, 639_841),
    "wrn_28_10": ArchCost(36_479_194, 4792.2, 10_240_867),
    "vgg8": ArchCost(3_918_858, 274.1, 132_482),
    "vgg11": ArchCost(9_231_114, 352.1, 298_370),
    "vgg13": ArchCost(9_416_010, 640.1, 445_826),
    "mobilenetv2": ArchCost(697_546, 603.6, 12_498),
    "shufflenetv2": ArchCost(1_263_278, 1462.5, 86_728),
    "resnet18": ArchCost(11_181_642, 149.1, 72_290),
    "resnet34": ArchCost(21_289_802, 224.1, 146_018),
    "resnet50": ArchCost(23_528_522, 639.0, 162_922),
    "mobilenet_v2": ArchCost(2_236_682, 388.2, 11_944),
    "mobilenet_v3_small": ArchCost(1_528_106, 84.5, 2_687),
    "mobilenet_v3_large": ArchCost(4_214_842, 256.2, 9_815),
    "efficientnet_b0": ArchCost(4_020_358, 402.8, 15_615),
    "shufflenet_v2_x1_0": ArchCost(1_263_854, 108.9, 5_740),
    "regnet_y_400mf": ArchCost(3_907_554, 230.2, 16_299),
}


@dataclass(frozen=True)
class DataFacts:
    """The data a job trains on, as far as the cost goes."""

    train_images: int
    test_images: int
    channels: int
    pixels: int  # height x width of the images as trained


# Built-in sources: (train images, test images, channels, side in pixels) of the official splits.
BUILTIN_DATA = {
    "cifar10": (50_000, 10_000, 3, 32), "cifar100": (50_000, 10_000, 3, 32), "svhn": (73_257, 26_032, 3, 32),
    "mnist": (60_000, 10_000, 1, 28), "fashion_mnist": (60_000, 10_000, 1, 28), "digits": (1_438, 359, 1, 8),
}
UPLOAD_CHANNELS = 3
FALLBACK_SIDE = 32  # an upload whose images cannot be read now (the job will say why when it runs)


def first_image_pixels(folder: Path) -> int | None:
    """width x height of the first image under an uploaded data set (kdcore needs one size, or image_size)."""
    from PIL import Image

    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                try:
                    with Image.open(Path(dirpath) / name) as image:  # reads the header only
                        return image.width * image.height
                except Exception:  # noqa: BLE001 (any unreadable file: fall back)
                    return None
    return None


def data_facts(spec: JobSpec, upload_images: int | None = None, upload_folder: Path | None = None) -> DataFacts:
    """The data of spec.dataset: a built-in source's official sizes, or an uploaded set's image count."""
    ds = spec.dataset
    if ds.source in BUILTIN_DATA:
        train, test, channels, side = BUILTIN_DATA[ds.source]
        pixels = side * side
    else:
        train, test, channels = upload_images or 0, 0, UPLOAD_CHANNELS
        pixels = (first_image_pixels(upload_folder) if upload_folder and ds.image_size is None else None) \
            or FALLBACK_SIDE ** 2
    if ds.image_size is not None:
        pixels = ds.image_size ** 2
    if ds.subset is not None:
        train = min(train, ds.subset)
    if ds.test_subset is not None:
        test = min(test, ds.test_subset)
    return DataFacts(train, test, channels, pixels)


@dataclass
class Phase:
    field: str  # where its recipe is in the spec
    arch: str
    recipe: TrainRecipe
    teacher_arch: str | None = None  # the frozen teacher run alongside (distillation)
    runs: int = 1  # the students train once per training seed


@dataclass
class JobEstimate:
    memory_bytes: int
    data_bytes: int
    train_flops: float
    memory_phase: Phase  # the phase with the largest training memory
    flops_phase: Phase  # the phase with the most compute


def training_phases(spec: JobSpec) -> list[Phase]:
    phases = []
    if spec.teacher.train is not None and spec.teacher.weights is None:
        phases.append(Phase("teacher.train", spec.teacher.arch, spec.teacher.train))
    runs = len(spec.effective_seeds())
    if spec.baseline:
        phases.append(Phase("train", spec.student.arch, spec.train, runs=runs))
    distilling = spec.distill.method != "none"
    phases.append(Phase("train", spec.student.arch, spec.train, spec.teacher.arch if distilling else None, runs))
    return phases


def estimate_job(spec: JobSpec, data: DataFacts) -> JobEstimate:
    data_bytes = DATA_COPIES * (data.train_images + data.test_images) * data.channels * data.pixels
    costs = []  # (phase, memory, flops)
    for phase in training_phases(spec):
        cost = ARCH_COSTS[phase.arch]
        views = 3 if phase.recipe.augmix_jsd else 1
        batch = min(phase.recipe.batch_size, max(data.train_images, 1)) * views
        images = phase.recipe.epochs * data.train_images * views * phase.runs
        memory = BYTES_PER_PARAM * cost.params + BYTES_PER_ACTIVATION * batch * data.pixels * cost.activations_per_pixel
        flops = 3.0 * images * data.pixels * cost.flops_per_pixel
        if phase.teacher_arch is not None:
            teacher = ARCH_COSTS[phase.teacher_arch]
            memory += BYTES_PER_ACTIVATION * teacher.params  # frozen: weights only, forward under no_grad
            flops += 1.0 * images * data.pixels * teacher.flops_per_pixel
        costs.append((phase, memory, flops))
    memory_phase, memory, _ = max(costs, key=lambda c: c[1])
    flops_phase = max(costs, key=lambda c: c[2])[0]
    return JobEstimate(int(data_bytes + memory), data_bytes, sum(c[2] for c in costs), memory_phase, flops_phase)


def check_resources(spec: JobSpec, data: DataFacts, max_memory_bytes: int, max_train_flops: float
                    ) -> list[SpecProblem]:
    """422 problems for a job estimated over the limits, naming the field to lower and the limit."""
    estimate = estimate_job(spec, data)
    problems = []
    if estimate.memory_bytes > max_memory_bytes:
        phase = estimate.memory_phase
        side = round(data.pixels ** 0.5)
        field = "dataset.image_size" if estimate.data_bytes > estimate.memory_bytes / 2 else f"{phase.field}.batch_size"
        problems.append(SpecProblem(field, (
            f"the job would need about {estimate.memory_bytes / GIB:.1f} GiB of memory ({phase.arch} trained in "
            f"batches of {phase.recipe.batch_size} images of {side}x{side} px, with "
            f"{estimate.data_bytes / GIB:.1f} GiB of data), over the limit of {max_memory_bytes / GIB:.1f} GiB "
            f"(KD_MAX_JOB_MEMORY_BYTES): lower {field}")))
    if estimate.train_flops > max_train_flops:
        phase = estimate.flops_phase
        field = f"{phase.field}.epochs"
        problems.append(SpecProblem(field, (
            f"training would take about {estimate.train_flops:.2g} FLOPs ({data.train_images} images, the "
            f"largest phase {phase.arch} for {phase.recipe.epochs} epochs x {phase.runs} seed(s)), over the limit of "
            f"{max_train_flops:.2g} (KD_MAX_JOB_TRAIN_FLOPS): lower {field}, dataset.subset or "
            "dataset.image_size, or pick a smaller arch")))
    return problems
