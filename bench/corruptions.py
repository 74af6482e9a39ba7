"""Throughput of the generated corruptions: ours (batched torch) vs the `imagecorruptions` package.

    .venv/bin/python bench/corruptions.py [--n 1000] [--data DIR] [--device cpu|cuda]

Images: the first --n test images of ../shared/datasets/cifar10-jpeg.tar.gz, or of an ImageFolder
(--data). Ours runs all 15 benchmark corruptions x 5 severities on all of them; imagecorruptions
(ImageNet-C parameters, one numpy image at a time) is first probed on 2 images in a child process
with a time cap, so a broken or hanging function is reported, not patched, and then timed on
--ic-n images (its cost is per image, so images/s does not depend on how many). Progress goes to
stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import multiprocessing as mp
import os
import platform
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kdcore.robustness import corrupt  # noqa: E402
from kdcore.spec import BENCHMARK_CORRUPTIONS  # noqa: E402

TARBALL = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
SEVERITIES = (1, 2, 3, 4, 5)


def load_images(n: int, data: str | None) -> np.ndarray:
    """(n, H, W, 3) uint8 from test/ of the tarball, or from an ImageFolder (sorted paths)."""
    images = []
    if data:
        paths = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:n]]
    else:
        with tarfile.open(TARBALL) as tf:
            for member in tf:
                if member.isfile() and member.name.startswith("test/") and member.name.endswith(".jpg"):
                    images.append(np.asarray(Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB")))
                    if len(images) == n:
                        break
    if not images:
        raise SystemExit("no images found")
    return np.stack(images)


def time_ours(x: torch.Tensor, name: str, batch: int, device: torch.device) -> float:
    """Seconds to corrupt every image at every severity (after one warm-up call)."""
    corrupt(x[:2], name, 1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    for s in SEVERITIES:
        for i in range(0, len(x), batch):
            idx = torch.arange(i, min(i + batch, len(x)), device=device)
            corrupt(x[i : i + batch], name, s, indices=idx)
    sync()
    return time.perf_counter() - start


IMPORT_NOTE = (
    "imagecorruptions 1.1.2 imports pkg_resources, which setuptools >= 81 no longer ships; the benchmark "
    "child process supplies a stand-in pkg_resources.resource_filename (used only to locate its frost "
    "images). Its corruption functions are run unmodified."
)


def _import_imagecorruptions():  # noqa: ANN202 (the package has no types)
    """Import imagecorruptions.corrupt; when only pkg_resources is missing, stand it in (this process)."""
    try:
        from imagecorruptions import corrupt as ic_corrupt
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            return str(Path(importlib.util.find_spec(package).origin).parent / resource)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
        from imagecorruptions import corrupt as ic_corrupt
    return ic_corrupt


def _ic_worker(name: str, images: np.ndarray, queue: mp.Queue) -> None:
    try:
        ic_corrupt = _import_imagecorruptions()

        for img in images[:2]:  # the probe
            ic_corrupt(img, corruption_name=name, severity=5)
        start = time.perf_counter()
        for s in SEVERITIES:
            for img in images:
                ic_corrupt(img, corruption_name=name, severity=s)
        queue.put(("ok", time.perf_counter() - start))
    except BaseException as exc:  # report any failure of the package as it is
        queue.put(("error", f"{type(exc).__name__}: {exc}"[:300]))


def time_imagecorruptions(name: str, images: np.ndarray, cap_s: float) -> tuple[float | None, str | None]:
    """(seconds for all images x 5 severities, None) or (None, error text)."""
    queue: mp.Queue = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=_ic_worker, args=(name, images, queue), daemon=True)
    proc.start()
    proc.join(cap_s)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, f"timed out after {cap_s:.0f} s"
    if queue.empty():
        return None, f"worker exited with code {proc.exitcode}"
    status, value = queue.get()
    return (value, None) if status == "ok" else (None, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--data", default=None, help="ImageFolder to read instead of the CIFAR tarball")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--ic-n", type=int, default=100, help="images for imagecorruptions (default 100)")
    parser.add_argument("--ic-cap", type=float, default=300.0, help="seconds per imagecorruptions function")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-imagecorruptions", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    images = load_images(args.n, args.data)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    per: dict[str, dict] = {}
    for name in BENCHMARK_CORRUPTIONS:
        t_ours = time_ours(x, name, args.batch, device)
        row: dict = {"ours_img_per_s": round(len(x) * 5 / t_ours, 1)}
        if not args.no_imagecorruptions:
            t_ic, err = time_imagecorruptions(name, images[: args.ic_n], args.ic_cap)
            ic_n = min(args.ic_n, len(images))
            row["imagecorruptions_img_per_s"] = None if t_ic is None else round(ic_n * 5 / t_ic, 2)
            if err:
                row["imagecorruptions_error"] = err
            if t_ic is not None:
                row["speedup"] = round(row["ours_img_per_s"] / row["imagecorruptions_img_per_s"], 1)
        per[name] = row
        print(f"{name:18s} {json.dumps(row)}", file=sys.stderr, flush=True)

    def rate(names: list[str], key: str) -> float | None:
        # images per second over the sum of the per-corruption times
        if not names:
            return None
        return round(len(names) / sum(1.0 / per[c][key] for c in names), 2)

    common = [c for c in per if per[c].get("imagecorruptions_img_per_s")]
    result = {
        "benchmark": "corruptions",
        "images": len(x),
        "image_size": list(images.shape[1:3]),
        "severities": list(SEVERITIES),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ours_all15_img_per_s": rate(list(per), "ours_img_per_s"),
        "common_corruptions": common,
        "ours_img_per_s": rate(common, "ours_img_per_s"),
        "imagecorruptions_img_per_s": rate(common, "imagecorruptions_img_per_s"),
        "imagecorruptions_images": min(args.ic_n, len(images)),
        "imagecorruptions_note": IMPORT_NOTE,
        "per_corruption": per,
    }
    if result["ours_img_per_s"] and result["imagecorruptions_img_per_s"]:
        result["speedup"] = round(result["ours_img_per_s"] / result["imagecorruptions_img_per_s"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
