"""Where one job's files live in its out_dir, and the keys of its finished phases in phases.json.

    out_dir/teacher.safetensors                     the teacher (trained once per job)
    out_dir/seeds/<seed>/baseline.safetensors       each training seed's students
    out_dir/seeds/<seed>/student.safetensors
    out_dir/student.safetensors, baseline.safetensors, student.onnx, student.ts
                                                    the exported seed's (results.json: exported_seed)
    out_dir/checkpoints/training_teacher.pt, seed-<seed>-<phase>.pt   while a phase runs
    out_dir/phases.json, results.json, report.html

No torch import: the service imports the artifact names on the request path.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = {"teacher": "teacher.safetensors", "student_baseline": "baseline.safetensors",
           "student_kd": "student.safetensors"}
SEEDS_DIR = "seeds"
RESULTS = "results.json"
REPORT = "report.html"
ONNX = "student.onnx"
TORCHSCRIPT = "student.ts"
# What a user can download, in the order listings show it.
ARTIFACT_NAMES = (WEIGHTS["student_kd"], ONNX, TORCHSCRIPT, WEIGHTS["teacher"], WEIGHTS["student_baseline"],
                  RESULTS, REPORT)
MEDIA_TYPES = {RESULTS: "application/json", REPORT: "text/html; charset=utf-8"}


def weights_path(out_dir: Path, name: str, seed: int | None = None) -> Path:
    """A model's weights file: the job-level one (seed None), or one training seed's."""
    folder = Path(out_dir) if seed is None else Path(out_dir) / SEEDS_DIR / str(seed)
    return folder / WEIGHTS[name]


def phase_key(name: str, seed: int | None = None) -> str:
    """The phases.json key of a finished phase: 'teacher', or 'seed-<seed>/<student name>'."""
    return name if seed is None else f"seed-{seed}/{name}"


def checkpoint_path(out_dir: Path, phase: str, seed: int | None = None) -> Path:
    return Path(out_dir) / "checkpoints" / (f"{phase}.pt" if seed is None else f"seed-{seed}-{phase}.pt")
