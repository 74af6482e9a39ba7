"""The per-model headline numbers of a results.json, stored on the job row as results_summary.

Pure Python (no torch, no database): the worker stores it, the `kd results` client prints it.
"""

from __future__ import annotations

from typing import Any

# Keys of results.json's model blocks, in the order the report reads them.
MODEL_KEYS = ("teacher", "student_baseline", "student_kd")
SUMMARY_FIELDS = ("clean_acc", "corruption_acc", "params", "size_bytes", "latency_ms")


def _find(block: Any, key: str) -> Any:
    """First value of `key` in a nested dict, breadth first (a model block may nest clean/robustness)."""
    queue = [block]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if key in node:
                return node[key]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def summarize_results(results: dict) -> dict[str, dict[str, Any]]:
    """{model: {clean_acc, corruption_acc, params, size_bytes, latency_ms}} for the models present."""
    models = results.get("models") if isinstance(results.get("models"), dict) else results
    summary: dict[str, dict[str, Any]] = {}
    for name in MODEL_KEYS:
        block = models.get(name)
        if isinstance(block, dict):
            summary[name] = {field: _find(block, field) for field in SUMMARY_FIELDS}
    return summary
