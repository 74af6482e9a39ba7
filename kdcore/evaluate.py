"""Clean-data metrics: accuracy, calibration, size, FLOPs and MACs, and CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdcore.data import normalize

# Images per inference batch when the caller does not say. Measured on the 2-core CPU (resnet56 and
# resnet20 on 32x32, channels_last): batches of 64 ran at about twice the images/s of batches of 1000,
# whose activations fall out of the caches. A GPU wants large batches.
CPU_INFERENCE_BATCH = 64
CUDA_INFERENCE_BATCH = 1000


def inference_batch_size(device: torch.device, requested: int | None = None) -> int:
    if requested:
        return requested
    return CPU_INFERENCE_BATCH if device.type == "cpu" else CUDA_INFERENCE_BATCH


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, fp32, in fixed-size batches (default: inference_batch_size)
    so that results do not depend on N."""
    model.eval()
    batch_size = inference_batch_size(device, batch_size)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start : start + batch_size].to(device), mean, std)
        outputs.append(model(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
    if not outputs:
        return torch.empty(0)
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass at batch 1, as torch.utils.flop_counter counts them: 2 per
    multiply-accumulate of the convolutions and matrix products; norms, activations and pooling are not
    counted (formulas["flops"])."""
    probe = copy.deepcopy(model).cpu().eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        probe(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


def macs_from_flops(flops: int) -> int:
    """Multiply-accumulates, the figure KD papers quote as "FLOPs" (formulas["macs"]): torch's counter
    counts exactly 2 FLOPs per MAC, so this is exact."""
    return flops // 2


def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, ...], runs: int = 30, warmup: int = 5) -> float:
    """Median wall time of a batch-1 forward pass on the CPU, in milliseconds."""
    probe = copy.deepcopy(model).cpu().eval()
    x = torch.randn(1, *input_shape)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            probe(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def model_report(
    model: nn.Module,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    weights_file: Path,
    latency: bool,
    calibration: bool,
) -> dict:
    """The clean-data block of one model in results.json; with calibration, `reliability` holds the clean
    reliability diagram and `corrupted` None (kdcore.pipeline fills it in from the corrupted cells)."""
    from kdcore.robustness.metrics import ECE_BINS, confidence_bins, negative_log_likelihood

    logits = predict_logits(model, test_x, mean=mean, std=std, device=device)
    input_shape = tuple(test_x.shape[1:])
    flops = forward_flops(model, input_shape)
    report = {
        "clean_acc": accuracy(logits, test_y),
        "n_test": len(test_y),
        "params": count_params(model),
        "size_bytes": weights_file.stat().st_size,
        "flops": flops,
        "macs": macs_from_flops(flops),
        "latency_ms": cpu_latency_ms(model, input_shape) if latency else None,
    }
    if calibration:
        bins = confidence_bins(logits, test_y, ECE_BINS)
        report["ece"] = bins.ece()
        report["nll"] = negative_log_likelihood(logits, test_y)
        report["reliability"] = {"bins": ECE_BINS, "clean": bins.reliability(), "corrupted": None}
    return report
