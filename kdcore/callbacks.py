"""How a caller (the CLI, the Celery worker) watches and steers kdcore.run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Progress:
    phase: str  # preparing_data, training_teacher, training_baseline, distilling, evaluating, exporting
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    fraction: float = 0.0  # of the whole job, 0..1
    eta_seconds: float | None = None
    seed: int | None = None  # the training seed of a student phase (JobSpec.seeds); None for job-wide phases


class Callbacks:
    """Default callbacks do nothing; subclass and override what you need.

    should_cancel is polled every few training steps and between evaluation cells; returning True
    makes kdcore.run raise kdcore.errors.Cancelled after saving nothing further.
    """

    def on_progress(self, progress: Progress) -> None:  # throttling is the caller's business
        pass

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """metrics: train_loss, val_acc, lr (and each named loss part); a student phase adds `seed`."""

    def on_log(self, message: str) -> None:
        pass

    def should_cancel(self) -> bool:
        return False
