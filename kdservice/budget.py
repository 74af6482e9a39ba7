"""One disk budget shared by every upload of a process: bytes received, copied to tmp/ and extracted.

Each upload holds a `Reservation` that grows before bytes are written (the body as it arrives, then
what its archive declares it expands to) and is released when the request ends. Concurrent uploads
therefore cannot together fill the disk, whatever each one's own limits allow.
"""

from __future__ import annotations

import threading


class BudgetExceeded(Exception):
    """Growing a reservation would pass the budget. `never_fits`: this upload alone is larger than it."""

    def __init__(self, wanted: int, in_use: int, total: int):
        self.wanted, self.in_use, self.total = wanted, in_use, total
        self.never_fits = wanted > total
        if self.never_fits:
            reason = f"this upload needs {wanted} bytes of temporary disk, more than the whole budget of {total}"
        else:
            reason = (f"the server's upload disk budget is in use ({in_use} of {total} bytes held by other "
                      f"uploads; this one needs {wanted} more): retry later")
        super().__init__(f"{reason} (KD_UPLOAD_DISK_BUDGET_BYTES)")


class DiskBudget:
    def __init__(self, total_bytes: int):
        self.total = total_bytes
        self.in_use = 0
        self._lock = threading.Lock()

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """Bytes one upload holds; `grow` before writing, `release` (idempotent) when its files are gone."""

    def __init__(self, budget: DiskBudget):
        self.budget = budget
        self.held = 0

    def grow(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        budget = self.budget
        with budget._lock:
            if budget.in_use + nbytes > budget.total:
                raise BudgetExceeded(self.held + nbytes, budget.in_use - self.held, budget.total)
            budget.in_use += nbytes
            self.held += nbytes

    def release(self) -> None:
        with self.budget._lock:
            self.budget.in_use -= self.held
            self.held = 0
