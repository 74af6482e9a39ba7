"""Why evaluation uses batches of 64 on CPU: predict_logits at several batch sizes, measured.

resnet56 and resnet20 on random 32x32 uint8 images, NCHW input fed to the model directly vs
predict_logits (channels_last batches). Rounds interleave the batch sizes, so the VM's drift hits
them alike.

    python bench/inference_batch.py [--images 2000] [--rounds 2] [--sizes 1000 256 64 32]

Prints one JSON line per measurement, then one JSON object with the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from kdcore.evaluate import predict_logits
from kdcore.models import build_model

CPU = torch.device("cpu")


def inference(images: int, rounds: int, sizes: list[int]) -> dict[str, float]:
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8)
    runs: dict[str, list[float]] = {}
    for arch in ("resnet56", "resnet20"):
        torch.manual_seed(0)
        model = build_model(arch, 10)
        for layout in ("nchw", "channels_last"):
            if layout == "channels_last":
                model = model.to(memory_format=torch.channels_last)
            for _ in range(rounds):
                for size in sizes:
                    # predict_logits makes each batch channels_last; the NCHW case feeds the model directly.
                    start = time.perf_counter()
                    if layout == "nchw":
                        with torch.inference_mode():
                            for i in range(0, images, size):
                                model.eval()(x[i : i + size].float().div_(255))
                    else:
                        predict_logits(model, x, mean=(0.5,) * 3, std=(0.25,) * 3, device=CPU, batch_size=size)
                    rate = images / (time.perf_counter() - start)
                    key = f"{arch}/{layout}/{size}"
                    runs.setdefault(key, []).append(rate)
                    print(json.dumps({"inference": key, "img_per_s": round(rate, 1)}), flush=True)
    return {k: round(statistics.median(v), 1) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 256, 64, 32])
    args = parser.parse_args()
    result = {
        "benchmark": "inference_batch", "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "inference_img_per_s": inference(args.images, args.rounds, args.sizes),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
