"""kdcore.run: spec -> data -> teacher -> for each seed (baseline student, distilled student) -> evaluate
-> export the best seed's student.

The teacher is trained (or loaded) once; the students once per training seed (JobSpec.seeds), each seed's
files in out_dir/seeds/<seed>/. Each finished training phase leaves its weights file and a line in
phases.json, and each running phase a checkpoint, so calling run() again on the same out_dir resumes where
the last call stopped, inside the seed it was in.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import kdcore
from kdcore.atomic import write_text_atomic
from kdcore.callbacks import Callbacks, Progress
from kdcore.data import ImageData, load_dataset
from kdcore.distill import build_distiller
from kdcore.evaluate import accuracy, predict_logits
from kdcore.export import (
    ModelCard,
    export_onnx,
    export_torchscript,
    load_model,
    load_weights_into,
    save_safetensors,
)
from kdcore.given_teacher import load_given_teacher
from kdcore.job_evaluation import evaluate_job
from kdcore.job_files import ONNX, RESULTS, TORCHSCRIPT, WEIGHTS, checkpoint_path, phase_key, weights_path
from kdcore.models import build_model
from kdcore.report import corruption_strip_png, write_report
from kdcore.robustness.evaluate import evaluation_subset
from kdcore.robustness.official import official_folder
from kdcore.seed_summary import exported_seed
from kdcore.settings import default_cache_dir, library_settings
from kdcore.spec import DistillSpec, JobSpec, TrainRecipe
from kdcore.teacher_cache import load_cached_teacher, store_teacher, teacher_key
from kdcore.train import train

TRAIN_PHASES = {"teacher": "training_teacher", "student_baseline": "training_baseline",
                "student_kd": "distilling"}
# Relative cost of one training step per phase, for the job's progress fraction and ETA.
STEP_COST = {"training_teacher": 1.0, "training_baseline": 0.5, "distilling": 1.0}
STRIP_IMAGES = 3  # example images in the report's corruption strip


class _Tracker:
    """Turns (phase, seed, epoch, step) into Progress with a job-wide fraction and an ETA."""

    def __init__(self, callbacks: Callbacks, plan: dict[tuple[str, int | None], float]):
        self.callbacks, self.plan = callbacks, plan
        self.total = sum(plan.values()) or 1.0
        self.offsets, running = {}, 0.0
        for key, units in plan.items():  # phases run in the plan's order
            self.offsets[key], running = running, running + units
        self.started = time.perf_counter()
        self.start_fraction: float | None = None

    def report(self, phase: str, done_in_phase: float, seed: int | None = None, **fields: int) -> None:
        key = (phase, seed)
        done = self.offsets.get(key, 0.0) + done_in_phase * self.plan.get(key, 0.0)
        fraction = min(1.0, done / self.total)
        if self.start_fraction is None:
            self.start_fraction = fraction
        gained = fraction - self.start_fraction
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (1.0 - fraction) / gained if gained > 1e-6 else None
        self.callbacks.on_progress(Progress(phase=phase, fraction=fraction, eta_seconds=eta, seed=seed, **fields))


class _SeedCallbacks(Callbacks):
    """The caller's callbacks inside one seed's student phase: logs say the seed, epoch metrics carry it."""

    def __init__(self, inner: Callbacks, seed: int):
        self.inner, self.seed = inner, seed

    def on_progress(self, progress: Progress) -> None:
        self.inner.on_progress(progress)

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.inner.on_epoch_end(phase, epoch, {**metrics, "seed": self.seed})

    def on_log(self, message: str) -> None:
        self.inner.on_log(f"seed {self.seed}: {message}")

    def should_cancel(self) -> bool:
        return self.inner.should_cancel()


@dataclass
class _Job:
    """What every step of one run shares."""

    spec: JobSpec
    data: ImageData
    out_dir: Path
    device: torch.device
    cache_dir: Path
    callbacks: Callbacks
    tracker: _Tracker
    phases: dict
    timings: dict[str, float] = field(default_factory=dict)

    def card(self, arch: str) -> ModelCard:
        d = self.data
        return ModelCard(arch=arch, num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                         classes=list(d.classes), mean=tuple(d.mean), std=tuple(d.std))

    def save_phases(self) -> None:
        _write_json(self.phases, self.out_dir / "phases.json")


def _new_model(arch: str, data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # same seed -> baseline and distilled student start from the same weights
    return build_model(arch, data.num_classes, data.in_channels, data.image_size)


def _write_json(obj: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=float))


def _resolve_weights(ref: str, weights_dir: Path | None) -> Path:
    path = Path(ref)
    if path.suffix == ".safetensors" or path.is_file():
        return path
    return (weights_dir or Path(".")) / f"{ref}.safetensors"


def environment(device: torch.device) -> dict:
    return {
        "kdcore": kdcore.__version__, "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }


def _student_names(spec: JobSpec) -> list[str]:
    return (["student_baseline"] if spec.baseline else []) + ["student_kd"]


def _plan(spec: JobSpec, data: ImageData) -> dict[tuple[str, int | None], float]:
    """Training steps (weighted by STEP_COST) of every phase, in run order; evaluating is 10% on top."""
    def units(phase: str, recipe: TrainRecipe) -> float:
        steps_per_epoch = max(1, len(data.train_y) // min(recipe.batch_size, len(data.train_y)))
        return recipe.epochs * steps_per_epoch * STEP_COST[phase]

    plan: dict[tuple[str, int | None], float] = {}
    if spec.teacher.weights is None:
        plan[("training_teacher", None)] = units("training_teacher", spec.teacher.train)
    for seed in spec.effective_seeds():
        for name in _student_names(spec):
            plan[(TRAIN_PHASES[name], seed)] = units(TRAIN_PHASES[name], spec.train)
    plan[("evaluating", None)] = 0.1 * sum(plan.values()) or 1.0
    return plan


def run(
    spec: JobSpec,
    out_dir: Path,
    callbacks: Callbacks | None = None,
    *,
    cache_dir: Path | None = None,
    uploads_dir: Path | None = None,
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    device: str | None = None,
) -> dict:
    """Run a whole job; returns the results dict also written to out_dir/results.json.

    data_dir: where built-in sources (cifar10, ...) and the official CIFAR-10-C/100-C arrays are read
    when the spec names no folder (the service passes KD_DATA_DIR; its specs never name one)."""
    callbacks = callbacks or Callbacks()
    if spec.evaluate.source == "official":  # a missing folder fails now, not after hours of training
        official_folder(spec.evaluate.official_root, data_dir, num_classes=10)
    if library_settings().torch_threads:
        torch.set_num_threads(library_settings().torch_threads)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    phases_file = out_dir / "phases.json"
    phases: dict = json.loads(phases_file.read_text()) if phases_file.exists() else {}

    started = time.perf_counter()
    callbacks.on_progress(Progress(phase="preparing_data"))
    data = load_dataset(spec.dataset, cache_dir=cache_dir, uploads_dir=uploads_dir, data_dir=data_dir)
    callbacks.on_log(
        f"data: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test images, "
        f"{data.num_classes} classes, {data.in_channels}x{data.image_size}x{data.image_size}"
    )
    job = _Job(spec, data, out_dir, dev, cache_dir, callbacks, _Tracker(callbacks, _plan(spec, data)), phases)
    job.timings["preparing_data"] = time.perf_counter() - started

    teacher = _teacher(job, weights_dir)
    seeds = spec.effective_seeds()
    for seed in seeds:
        for name in _student_names(spec):
            _student(job, teacher, name, seed)

    results = evaluate_job(job.spec, job.data, job.out_dir, seeds, _student_names(spec), phases=job.phases,
                           device=dev, cache_dir=cache_dir, data_dir=data_dir, callbacks=callbacks,
                           report=lambda done, **f: job.tracker.report("evaluating", done, **f), timings=job.timings)

    t0 = time.perf_counter()
    callbacks.on_progress(Progress(phase="exporting", fraction=1.0))
    best = exported_seed(results["runs"])
    for name in _student_names(spec):  # the deliverable: a byte copy of the selected seed's files
        shutil.copyfile(weights_path(out_dir, name, best), weights_path(out_dir, name))
    student, card = load_model(out_dir / WEIGHTS["student_kd"])
    exports = {"safetensors": WEIGHTS["student_kd"]}
    if "torchscript" in spec.export:
        exports["torchscript"] = export_torchscript(student, card, out_dir / TORCHSCRIPT).name
    if "onnx" in spec.export:
        exports.update(export_onnx(student, card, out_dir / ONNX))
        exports["onnx"] = ONNX
    job.timings["exporting"] = time.perf_counter() - t0
    job.timings["total"] = time.perf_counter() - started
    by_seed = {entry["seed"]: entry for entry in results["runs"]}
    # The exported seed's blocks at the top level, so that readers of a single-seed job keep working.
    results = {"teacher": results.pop("teacher"), **{n: by_seed[best][n] for n in _student_names(spec)},
               "exported_seed": best, "distill_settings": spec.distill.settings(spec.train.epochs), **results,
               "exports": exports, "timings": job.timings, "environment": environment(dev),
               "spec": spec.model_dump(mode="json")}
    _write_json(results, out_dir / RESULTS)
    _write_report(results, spec, data, out_dir)
    for leftover in (out_dir / "checkpoints").glob("*.pt"):
        leftover.unlink()  # the job succeeded: checkpoints only served resuming it
    return results


def _write_report(results: dict, spec: JobSpec, data: ImageData, out_dir: Path) -> None:
    """report.html beside results.json, with a strip of the first evaluated test images under each
    corruption (generated corruptions only: the official arrays are not ours to redraw)."""
    ev = spec.evaluate
    names, strip = ev.corruption_names(), None
    if names and ev.source == "generated":
        shown = evaluation_subset(data.test_y, ev.max_images)[:STRIP_IMAGES]
        severity = 3 if 3 in ev.severities else ev.severities[len(ev.severities) // 2]
        strip = corruption_strip_png(data.test_x[shown], names, severity=severity, seed=ev.seed,
                                     indices=data.test_index[shown])
    write_report(results, out_dir, grid_png=strip)


def _teacher(job: _Job, weights_dir: Path | None) -> torch.nn.Module:
    """The job's teacher, from the given weights, an earlier call on this out_dir, the cache, or trained."""
    spec = job.spec
    arch, recipe = spec.teacher.arch, spec.teacher.train
    teacher = _new_model(arch, job.data, seed=recipe.seed if recipe else 0)
    weights_file = weights_path(job.out_dir, "teacher")
    if spec.teacher.weights is not None:  # checked against the data's card, wrapped if only its mean/std differ
        teacher = load_given_teacher(teacher, _resolve_weights(spec.teacher.weights, weights_dir), job.card(arch),
                                     weights_file, job.callbacks.on_log)
        job.phases["teacher"] = {"source": "weights"}
        return teacher
    cache_key = teacher_key(job.data.fingerprint, arch, recipe)
    if "teacher" in job.phases and weights_file.exists():
        load_weights_into(teacher, weights_file)
        job.callbacks.on_log(f"training_teacher: already done, loaded {weights_file.name}")
    elif spec.teacher.reuse and (cached := load_cached_teacher(job.cache_dir, cache_key, teacher)):
        job.phases["teacher"] = {**cached, "reused_from_cache": cache_key}
        save_safetensors(teacher, job.card(arch), weights_file)
        job.save_phases()
        job.tracker.report("training_teacher", 1.0)
        job.callbacks.on_log(f"training_teacher: reused the teacher an earlier run trained on the same data with "
                             f"the same arch and recipe (teacher cache {cache_key})")
    else:
        _train(job, teacher, None, "teacher", recipe, DistillSpec(method="none"), None)
        store_teacher(job.cache_dir, cache_key, teacher, job.card(arch), job.phases["teacher"])
    return teacher


def _student(job: _Job, teacher: torch.nn.Module, name: str, seed: int) -> None:
    """Train (or find already trained) one seed's baseline or distilled student."""
    weights_file = weights_path(job.out_dir, name, seed)
    if phase_key(name, seed) in job.phases and weights_file.exists():
        job.callbacks.on_log(f"seed {seed}: {TRAIN_PHASES[name]}: already done ({weights_file.name})")
        return
    model = _new_model(job.spec.student.arch, job.data, seed=seed)
    method = job.spec.distill if name == "student_kd" else DistillSpec(method="none")
    recipe = job.spec.train.model_copy(update={"seed": seed})  # data order and augmentation follow the seed
    _train(job, model, teacher, name, recipe, method, seed)


def _train(job: _Job, model: torch.nn.Module, teacher: torch.nn.Module | None, name: str, recipe: TrainRecipe,
           method: DistillSpec, seed: int | None) -> None:
    """Train one phase, record it in phases.json and write its weights file."""
    t0 = time.perf_counter()
    phase = TRAIN_PHASES[name]
    callbacks = job.callbacks if seed is None else _SeedCallbacks(job.callbacks, seed)
    weights_file = weights_path(job.out_dir, name, seed)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    sample = job.data.train_x[:2]
    distiller = build_distiller(method, model, None if method.method == "none" else teacher,
                                sample_input=(sample.float() / 255.0).to(job.device), epochs=recipe.epochs)
    summary = train(
        phase, distiller, job.data, recipe, device=job.device, checkpoint=checkpoint_path(job.out_dir, phase, seed),
        callbacks=callbacks,
        report_step=lambda e, s, n, E: job.tracker.report(phase, (e * n + s) / (E * n), seed=seed, epoch=e + 1,
                                                          epochs=E, step=s, steps=n),
    )
    probe = _new_model(model_arch(job.spec, name), job.data, seed=0)
    probe.load_state_dict(summary.last_state)
    last_logits = predict_logits(probe, job.data.test_x, mean=job.data.mean, std=job.data.std, device=job.device)
    job.phases[phase_key(name, seed)] = {**summary.to_dict(), "last_epoch_acc": accuracy(last_logits,
                                                                                         job.data.test_y)}
    save_safetensors(model, job.card(model_arch(job.spec, name)), weights_file)
    job.save_phases()
    job.timings[phase_key(phase, seed)] = time.perf_counter() - t0


def model_arch(spec: JobSpec, name: str) -> str:
    return spec.teacher.arch if name == "teacher" else spec.student.arch
