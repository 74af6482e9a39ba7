"""Errors a user can act on. The worker stores `code` and `message` on the failed job."""

from __future__ import annotations


class KDError(Exception):
    code = "kd_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class DataError(KDError):
    """The data set cannot be found, read or used (missing root, bad files, too few classes)."""

    code = "data_error"


class WeightsError(KDError):
    """Teacher weights are missing, not safetensors, or do not fit the architecture."""

    code = "weights_error"


class Cancelled(KDError):
    code = "cancelled"

    def __init__(self, message: str = "cancelled by request"):
        super().__init__(message)
