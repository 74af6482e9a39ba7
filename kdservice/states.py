"""Job states: the one list every part of the service (and the `kd` client) imports."""

from __future__ import annotations

from typing import Literal

JOB_STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
# A worker owns a job in these states (it holds the claim and renews the lease).
OWNED_STATES = ("running", "cancelling")
JobState = Literal[JOB_STATES]  # type: ignore[valid-type]
