"""`kd corruptions-grid`: one test image under every corruption (rows) and severity (columns)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kdcore.spec import CORRUPTIONS, DatasetSpec, JobSpec

PANEL_PX = 96  # a 32 px image is drawn 3x (nearest neighbour), big enough to see its pixels
GAP_PX = 4  # white space between panels
LEFT_PX, TOP_PX, MARGIN_PX = 170, 70, 10  # row labels ("elastic_transform"); column labels + title
DPI = 100


def _upscale(image_size: int) -> int:
    return max(1, PANEL_PX // image_size)


def grid_size_pixels(n_rows: int, n_cols: int, image_size: int = 32) -> tuple[int, int]:
    """(width, height) of the PNG: fixed margins plus one square panel (and a gap) per cell."""
    pitch = image_size * _upscale(image_size) + GAP_PX
    return LEFT_PX + n_cols * pitch + MARGIN_PX, TOP_PX + n_rows * pitch + MARGIN_PX


def _canvas(rows: list[list[torch.Tensor]], scale: int) -> np.ndarray:
    """All panels pasted into one white uint8 HWC array: one imshow instead of 100+ axes (fast)."""
    c, h, w = rows[0][0].shape
    ph, pw = h * scale + GAP_PX, w * scale + GAP_PX
    canvas = np.full((len(rows) * ph, len(rows[0]) * pw, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for k, panel in enumerate(row):
            hwc = panel.permute(1, 2, 0).cpu().numpy().repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = r * ph + GAP_PX // 2, k * pw + GAP_PX // 2
            canvas[top:top + h * scale, left:left + w * scale] = hwc if c == 3 else hwc[..., :1]
    return canvas


def render_grid(
    image_uint8_chw: torch.Tensor,
    out_path: str | Path,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write a PNG: a "clean" column, then one column per severity; one row per corruption.

    The image is square or not; a 1-channel image is drawn in gray. Pixel size: grid_size_pixels.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    from kdcore.robustness import corrupt

    if image_uint8_chw.dtype != torch.uint8 or image_uint8_chw.dim() != 3:
        raise ValueError("render_grid needs one uint8 image of shape (C, H, W)")
    image = image_uint8_chw.cpu()
    _, h, w = image.shape
    scale = _upscale(max(h, w))
    rows = [
        [image] + [corrupt(image[None], name, s, seed=seed, indices=torch.tensor([0]))[0] for s in severities]
        for name in corruptions
    ]
    canvas = _canvas(rows, scale)
    n_rows, n_cols = len(rows), len(rows[0])
    width = LEFT_PX + canvas.shape[1] + MARGIN_PX
    height = TOP_PX + canvas.shape[0] + MARGIN_PX
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    # The axes covers exactly the canvas's pixels, so nearest-neighbour drawing is 1:1.
    box = (LEFT_PX / width, MARGIN_PX / height, canvas.shape[1] / width, canvas.shape[0] / height)
    ax = fig.add_axes(box)
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    pitch_y, pitch_x = canvas.shape[0] / n_rows, canvas.shape[1] / n_cols
    ax.set_yticks([(r + 0.5) * pitch_y for r in range(n_rows)], list(corruptions), fontsize=9)
    ax.set_xticks([(k + 0.5) * pitch_x for k in range(n_cols)], ["clean"] + [str(s) for s in severities])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xlabel("severity", fontsize=9)
    ax.xaxis.set_label_position("top")
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.text(0.5, 1 - 8 / height, title, ha="center", va="top", fontsize=10)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)  # no bbox_inches="tight": the pixel size stays predictable
    plt.close(fig)
    return out_path


def grid_from_dataset_spec(
    spec_path: str | Path,
    out_path: str | Path,
    index: int = 0,
    cache_dir: str | Path | None = None,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> Path:
    """Render test image `index` of the data set named by a JSON file (a JobSpec or a DatasetSpec).

    A JobSpec also gives the split seed (dataset.split_seed) and the corruption seed (evaluate.seed).
    cache_dir defaults to ~/.cache/kd, as for the data sets themselves.
    """
    from kdcore.data import load_dataset
    from kdcore.errors import DataError

    raw = json.loads(Path(spec_path).read_text())
    if isinstance(raw, dict) and "dataset" in raw:
        job = JobSpec.model_validate(raw)
        dataset, corruption_seed = job.dataset, job.evaluate.seed
    else:
        dataset, corruption_seed = DatasetSpec.model_validate(raw), 0
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "kd"
    data = load_dataset(dataset, cache_dir=cache)
    if not 0 <= index < len(data.test_x):
        raise DataError(f"index {index} is outside the test split (0..{len(data.test_x) - 1})")
    label = data.classes[int(data.test_y[index])]
    title = f"{dataset.source} test image {index} ({label}), corruption seed {corruption_seed}"
    return render_grid(data.test_x[index], out_path, corruptions, seed=corruption_seed, title=title)
