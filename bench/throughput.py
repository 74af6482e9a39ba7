"""Images/s of one KD training step: kdcore's trainer against a plain PyTorch loop, side by side.

Both train student resnet20 from teacher resnet56 with the KD loss (T=4, alpha=0.9), batch 128, SGD,
the same precision, on the same CIFAR-10 JPEG ImageFolder:
- project: kdcore.data (decoded once into a uint8 tensor, cached), BatchLoader (batched crop + flip),
  kdcore.train's step (channels_last, teacher under no_grad);
- plain: torchvision ImageFolder + DataLoader + per-sample RandomCrop/RandomHorizontalFlip/ToTensor/
  Normalize, the textbook loop.
Runs alternate (project, plain, project, ...) and the median of --repeats is reported.

    python bench/throughput.py [--data DIR] [--steps 15] [--repeats 3] [--device cpu]

Last line: one JSON object with project_img_per_s, plain_img_per_s, speedup, device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

from kdcore.data import BatchLoader, load_dataset
from kdcore.distill import build_distiller
from kdcore.models import build_model
from kdcore.spec import DatasetSpec, DistillSpec, TrainRecipe, resolve_flip
from kdcore.train import compile_models, make_optimizer, make_train_step

REPO = Path(__file__).resolve().parents[1]
TARBALL = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
BATCH = 128


def extract_cifar(dest: Path) -> Path:
    root = dest / "cifar10-jpeg"
    if not (root / "train").is_dir():
        with tarfile.open(TARBALL) as tar:
            tar.extractall(root, filter="data")
    # The tarball may hold a top folder; find the one with train/ and test/.
    for candidate in [root, *root.iterdir()]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise SystemExit(f"no train/ and test/ under {root}")


def models(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build_model("resnet56", 10).to(device), build_model("resnet20", 10).to(device)


def project_runner(data_root: Path, cache: Path, device: torch.device, recipe: TrainRecipe):
    t0 = time.perf_counter()
    data = load_dataset(DatasetSpec(source="imagefolder", root=str(data_root)), cache_dir=cache)
    decode_s = time.perf_counter() - t0
    teacher, student = models(device)
    teacher.to(memory_format=torch.channels_last).eval()
    student.to(memory_format=torch.channels_last)
    distiller = build_distiller(DistillSpec(method="kd"), student, teacher,
                                sample_input=torch.zeros(2, 3, 32, 32, device=device), epochs=recipe.epochs)
    if recipe.compile:
        compile_models(distiller, device)
    optimizer = make_optimizer(list(student.parameters()), recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = make_train_step(distiller, optimizer, scaler, recipe, device, None)
    loader = BatchLoader(data.train_x, data.train_y, batch_size=BATCH, shuffle=True, drop_last=True,
                         augment="standard", flip=resolve_flip(recipe.flip, data.source), mean=data.mean,
                         std=data.std, device=device, seed=0,
                         channels_last=True)
    epoch = [0]

    def run(steps: int) -> float:
        loader.set_epoch(epoch[0])
        epoch[0] += 1
        student.train()
        it = iter(loader)
        images, targets = next(it)
        step(images, targets, 0)  # warm-up step, not timed
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            images, targets = next(it)
            step(images, targets, 0)
        _sync(device)
        return steps * BATCH / (time.perf_counter() - start)

    return run, decode_s


def plain_runner(data_root: Path, device: torch.device, recipe: TrainRecipe, workers: int):
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    dataset = torchvision.datasets.ImageFolder(str(data_root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    teacher, student = models(device)
    teacher.eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=5e-4)
    temperature, alpha = 4.0, 0.9

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        images, targets = images.to(device), targets.to(device)
        with torch.no_grad():
            teacher_logits = teacher(images)
        logits = student(images)
        kd = F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                      reduction="batchmean") * temperature**2
        loss = (1 - alpha) * F.cross_entropy(logits, targets) + alpha * kd
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run(steps: int) -> float:
        student.train()
        it = iter(loader)
        step(*next(it))  # warm-up (also starts the workers), not timed
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(it))
        _sync(device)
        return steps * BATCH / (time.perf_counter() - start)

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="ImageFolder with train/ (default: the CIFAR-10 JPEG tarball)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="DataLoader workers of the plain loop")
    parser.add_argument("--no-compile", action="store_true", help="run the project's models eagerly")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = TrainRecipe(epochs=1, batch_size=BATCH, lr=0.05, precision="fp32", compile=not args.no_compile)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or extract_cifar(Path(tmp))
        project, decode_s = project_runner(root, Path(tmp) / "cache", device, recipe)
        plain = plain_runner(root, device, recipe, args.workers)
        runs: dict[str, list[float]] = {"project": [], "plain": []}
        for i in range(args.repeats):
            for name, runner in (("project", project), ("plain", plain)):
                runs[name].append(runner(args.steps))
                print(json.dumps({"repeat": i, "loop": name, "img_per_s": round(runs[name][-1], 1)}), flush=True)
    project_ips, plain_ips = statistics.median(runs["project"]), statistics.median(runs["plain"])
    print(json.dumps({
        "benchmark": "kd_step_throughput", "teacher": "resnet56", "student": "resnet20", "batch_size": BATCH,
        "precision": "fp32", "project_compile": recipe.compile, "steps_per_run": args.steps, "repeats": args.repeats,
        "project_img_per_s": round(project_ips, 1), "plain_img_per_s": round(plain_ips, 1),
        "speedup": round(project_ips / plain_ips, 2), "project_runs": [round(v, 1) for v in runs["project"]],
        "plain_runs": [round(v, 1) for v in runs["plain"]], "plain_dataloader_workers": args.workers,
        "project_one_time_decode_s": round(decode_s, 1), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
