"""Where one job's files live in its out_dir, and the keys of its finished phases in phases.json.

    out_dir/teacher.safetensors                     the teacher (trained once per job)
    out_dir/seeds/<seed>/baseline.safetensors       each training seed's students
    out_dir/seeds/<seed>/student.safetensors
    out_dir/student.safetensors, baseline.safetensors, student.onnx, student.ts
                                                    the exported seed's (results.json: exported_seed)
    out_dir/checkpoints/training_teacher.pt, seed-<seed>-<phase>.pt   while a phase runs
    out_dir/phases.json, results.json
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS = {"teacher": "teacher.safetensors", "student_baseline": "baseline.safetensors",
           "student_kd": "student.safetensors"}
SEEDS_DIR = "seeds"


def weights_path(out_dir: Path, name: str, seed: int | None = None) -> Path:
    """A model's weights file: the job-level one (seed None), or one training seed's."""
    folder = Path(out_dir) if seed is None else Path(out_dir) / SEEDS_DIR / str(seed)
    return folder / WEIGHTS[name]


def phase_key(name: str, seed: int | None = None) -> str:
    """The phases.json key of a finished phase: 'teacher', or 'seed-<seed>/<student name>'."""
    return name if seed is None else f"seed-{seed}/{name}"


def checkpoint_path(out_dir: Path, phase: str, seed: int | None = None) -> Path:
    return Path(out_dir) / "checkpoints" / (f"{phase}.pt" if seed is None else f"seed-{seed}-{phase}.pt")
