"""Robustness: generated (CIFAR-C-like) corruptions, official CIFAR-10-C/100-C arrays, metrics."""

from kdcore.robustness.corruptions import CORRUPTIONS, corrupt
from kdcore.robustness.evaluate import evaluate_robustness
from kdcore.robustness.metrics import FORMULAS, compare_to_baseline
from kdcore.robustness.official import load_official

__all__ = [
    "CORRUPTIONS",
    "corrupt",
    "evaluate_robustness",
    "compare_to_baseline",
    "load_official",
    "FORMULAS",
]
