"""kdcore.run: spec -> data -> teacher -> baseline student -> distilled student -> evaluate -> export.

Each finished training phase leaves its weights file and a line in phases.json, and each running phase
a checkpoint, so calling run() again on the same out_dir resumes where the last call stopped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

import kdcore
from kdcore.callbacks import Callbacks, Progress
from kdcore.data import ImageData, load_dataset
from kdcore.distill import build_distiller
from kdcore.evaluate import accuracy, model_report, predict_logits
from kdcore.export import (
    ModelCard,
    export_onnx,
    export_torchscript,
    load_model,
    load_weights_into,
    save_safetensors,
)
from kdcore.models import build_model
from kdcore.robustness import FORMULAS, compare_to_baseline, evaluate_robustness
from kdcore.robustness.official import official_folder
from kdcore.settings import default_cache_dir, library_settings
from kdcore.spec import DistillSpec, JobSpec, TrainRecipe
from kdcore.teacher_cache import load_cached_teacher, store_teacher, teacher_key
from kdcore.train import train

WEIGHTS = {"teacher": "teacher.safetensors", "student_baseline": "baseline.safetensors",
           "student_kd": "student.safetensors"}
TRAIN_PHASES = {"teacher": "training_teacher", "student_baseline": "training_baseline",
                "student_kd": "distilling"}
# Relative cost of one training step per phase, for the job's progress fraction and ETA.
STEP_COST = {"training_teacher": 1.0, "training_baseline": 0.5, "distilling": 1.0}


class _Tracker:
    """Turns (phase, epoch, step) into Progress with a job-wide fraction and an ETA."""

    def __init__(self, callbacks: Callbacks, plan: dict[str, float]):
        self.callbacks, self.plan = callbacks, plan
        self.total = sum(plan.values()) or 1.0
        self.offsets, running = {}, 0.0
        for name, units in plan.items():  # phases run in the plan's order
            self.offsets[name], running = running, running + units
        self.started = time.perf_counter()
        self.start_fraction: float | None = None

    def report(self, phase: str, done_in_phase: float, **fields: int) -> None:
        done = self.offsets.get(phase, 0.0) + done_in_phase * self.plan.get(phase, 0.0)
        fraction = min(1.0, done / self.total)
        if self.start_fraction is None:
            self.start_fraction = fraction
        gained = fraction - self.start_fraction
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (1.0 - fraction) / gained if gained > 1e-6 else None
        self.callbacks.on_progress(Progress(phase=phase, fraction=fraction, eta_seconds=eta, **fields))


def _card(arch: str, data: ImageData) -> ModelCard:
    return ModelCard(arch=arch, num_classes=data.num_classes, in_channels=data.in_channels,
                     image_size=data.image_size, classes=list(data.classes), mean=tuple(data.mean),
                     std=tuple(data.std))


def _new_model(arch: str, data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # same seed -> baseline and distilled student start from the same weights
    return build_model(arch, data.num_classes, data.in_channels, data.image_size)


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


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
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    phases_file = out_dir / "phases.json"
    phases: dict = json.loads(phases_file.read_text()) if phases_file.exists() else {}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    callbacks.on_progress(Progress(phase="preparing_data"))
    data = load_dataset(spec.dataset, cache_dir=cache_dir, seed=spec.train.seed, uploads_dir=uploads_dir,
                        data_dir=data_dir)
    timings["preparing_data"] = time.perf_counter() - started
    callbacks.on_log(
        f"data: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test images, "
        f"{data.num_classes} classes, {data.in_channels}x{data.image_size}x{data.image_size}"
    )

    recipes: dict[str, tuple[TrainRecipe, DistillSpec]] = {}
    if spec.teacher.weights is None:
        recipes["teacher"] = (spec.teacher.train, DistillSpec(method="none"))
    if spec.baseline:
        recipes["student_baseline"] = (spec.train, DistillSpec(method="none"))
    recipes["student_kd"] = (spec.train, spec.distill)
    steps_per_epoch = {name: max(1, len(data.train_y) // min(r.batch_size, len(data.train_y)))
                       for name, (r, _) in recipes.items()}
    plan = {TRAIN_PHASES[n]: r.epochs * steps_per_epoch[n] * STEP_COST[TRAIN_PHASES[n]]
            for n, (r, _) in recipes.items()}
    plan["evaluating"] = 0.1 * sum(plan.values()) or 1.0
    tracker = _Tracker(callbacks, plan)

    archs = {"teacher": spec.teacher.arch, "student_baseline": spec.student.arch,
             "student_kd": spec.student.arch}
    models: dict[str, torch.nn.Module] = {}
    teacher = _new_model(spec.teacher.arch, data, seed=spec.teacher.train.seed if spec.teacher.train else 0)
    if spec.teacher.weights is not None:
        load_weights_into(teacher, _resolve_weights(spec.teacher.weights, weights_dir))
        save_safetensors(teacher, _card(spec.teacher.arch, data), out_dir / WEIGHTS["teacher"])
        phases["teacher"] = {"source": "weights"}
    models["teacher"] = teacher

    for name in ("teacher", "student_baseline", "student_kd"):
        if name not in recipes:
            continue
        recipe, method = recipes[name]
        phase = TRAIN_PHASES[name]
        weights_file = out_dir / WEIGHTS[name]
        model = teacher if name == "teacher" else _new_model(archs[name], data, seed=recipe.seed)
        cache_key = teacher_key(data.fingerprint, archs[name], recipe) if name == "teacher" else ""
        if name in phases and weights_file.exists():
            load_weights_into(model, weights_file)
            callbacks.on_log(f"{phase}: already done, loaded {weights_file.name}")
        elif cache_key and spec.teacher.reuse and (cached := load_cached_teacher(cache_dir, cache_key, model)):
            phases[name] = {**cached, "reused_from_cache": cache_key}
            save_safetensors(model, _card(archs[name], data), weights_file)
            _write_json(phases, phases_file)
            tracker.report(phase, 1.0)
            callbacks.on_log(f"{phase}: reused the teacher an earlier run trained on the same data with the same "
                             f"arch and recipe (teacher cache {cache_key})")
        else:
            t0 = time.perf_counter()
            sample = data.train_x[:2]
            distiller = build_distiller(
                method, model, None if name == "teacher" or method.method == "none" else teacher,
                sample_input=(sample.float() / 255.0).to(dev),
            )
            summary = train(
                phase, distiller, data, recipe, device=dev, checkpoint=ckpt_dir / f"{phase}.pt",
                callbacks=callbacks,
                report_step=lambda e, s, n, E, p=phase: tracker.report(
                    p, (e * n + s) / (E * n), epoch=e + 1, epochs=E, step=s, steps=n),
            )
            probe = _new_model(archs[name], data, seed=0)
            probe.load_state_dict(summary.last_state)
            last_logits = predict_logits(probe, data.test_x, mean=data.mean, std=data.std, device=dev)
            phases[name] = {**summary.to_dict(), "last_epoch_acc": accuracy(last_logits, data.test_y)}
            save_safetensors(model, _card(archs[name], data), weights_file)
            _write_json(phases, phases_file)
            if cache_key:
                store_teacher(cache_dir, cache_key, model, _card(archs[name], data), phases[name])
            timings[phase] = time.perf_counter() - t0
        models[name] = model

    results = evaluate_all(spec, data, out_dir, models, phases, dev, cache_dir, callbacks, tracker, timings,
                           data_dir)

    t0 = time.perf_counter()
    callbacks.on_progress(Progress(phase="exporting", fraction=1.0))
    student, card = load_model(out_dir / WEIGHTS["student_kd"])
    exports = {"safetensors": WEIGHTS["student_kd"]}
    if "torchscript" in spec.export:
        exports["torchscript"] = export_torchscript(student, card, out_dir / "student.ts").name
    if "onnx" in spec.export:
        exports.update(export_onnx(student, card, out_dir / "student.onnx"))
        exports["onnx"] = "student.onnx"
    timings["exporting"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    results.update({"exports": exports, "timings": timings, "environment": environment(dev),
                    "spec": spec.model_dump(mode="json")})
    _write_json(results, out_dir / "results.json")
    for leftover in ckpt_dir.glob("*.pt"):
        leftover.unlink()  # the job succeeded: checkpoints only served resuming it
    return results


def evaluate_all(spec, data, out_dir, models, phases, dev, cache_dir, callbacks, tracker, timings,
                 data_dir=None) -> dict:
    """Clean and corrupted metrics for every model, on weights reloaded from the exported files."""
    t0 = time.perf_counter()
    tracker.report("evaluating", 0.0)
    results: dict = {}
    reloaded = {}
    for name in models:
        model, _ = load_model(out_dir / WEIGHTS[name])  # evaluate exactly what the user downloads
        reloaded[name] = model.to(dev)
        block = model_report(
            model, data.test_x, data.test_y, mean=data.mean, std=data.std, device=dev,
            weights_file=out_dir / WEIGHTS[name], latency=spec.evaluate.latency,
            calibration=spec.evaluate.calibration,
        )
        summary = phases.get(name, {})
        block.update({
            "arch": spec.teacher.arch if name == "teacher" else spec.student.arch,
            "best_epoch": summary.get("best_epoch"), "best_val_acc": summary.get("best_val_acc"),
            "last_epoch_val_acc": summary.get("last_val_acc"), "last_epoch_acc": summary.get("last_epoch_acc"),
            "resumed_from_epoch": summary.get("resumed_from_epoch"), "history": summary.get("history", []),
            "reused_from_cache": summary.get("reused_from_cache"),  # teacher cache key, when not trained here
        })
        results[name] = block
    names = spec.evaluate.corruption_names()
    if names:
        total_cells = len(names) * len(spec.evaluate.severities)
        robust = evaluate_robustness(
            reloaded, data.test_x, data.test_y, mean=data.mean, std=data.std, spec=spec.evaluate,
            device=dev, cache_dir=cache_dir, fingerprint=data.fingerprint, data_dir=data_dir,
            clean_acc={n: results[n]["clean_acc"] for n in results},
            should_cancel=callbacks.should_cancel,
            on_cell=lambda done, total=total_cells: tracker.report("evaluating", done / total, step=done,
                                                                   steps=total),
        )
        for name, block in robust.items():
            results[name].update(block)
    teacher = results["teacher"]
    for name in ("student_kd", "student_baseline"):
        if name in results:
            results[name]["compression_vs_teacher"] = _compression(teacher, results[name])
    if "student_baseline" in results and names:
        results["kd_vs_baseline"] = compare_to_baseline(
            results["student_kd"], results["student_baseline"], teacher
        )
    elif "student_baseline" in results:
        delta = results["student_kd"]["clean_acc"] - results["student_baseline"]["clean_acc"]
        results["kd_vs_baseline"] = {"clean_acc_delta": delta}
    results["formulas"] = FORMULAS
    results["corruption_source"] = (
        results["student_kd"].get("source") if names else "none (evaluate.corruptions was 'none')"
    )
    results["dataset"] = {"source": spec.dataset.source, "classes": list(data.classes),
                          "n_train": len(data.train_y), "n_val": len(data.val_y), "n_test": len(data.test_y),
                          "fingerprint": data.fingerprint}
    timings["evaluating"] = time.perf_counter() - t0
    return results


def _compression(teacher: dict, student: dict) -> dict:
    def ratio(key: str) -> float | None:
        return teacher[key] / student[key] if teacher.get(key) and student.get(key) else None

    return {"params_ratio": ratio("params"), "size_ratio": ratio("size_bytes"), "flops_ratio": ratio("flops"),
            "latency_speedup": ratio("latency_ms")}
