"""The report's corruption strip: a few test images, clean and under each corruption at one severity (PNG)."""

from __future__ import annotations

import io
from collections.abc import Sequence

STRIP_PANEL_PX = 64  # smaller than the grid's 96 px panels: the strip is one picture among many in the report
TOP_PX, RIGHT_PX, MARGIN_PX, DPI = 100, 110, 6, 100  # room for the title and the slanted column labels


def corruption_strip_png(images_uint8, corruption_names: Sequence[str], severity: int = 3, seed: int = 0,
                         indices=None) -> bytes:
    """PNG bytes: one row per image (N, C, H, W uint8, a tensor or array; pass a few, e.g. the first 3 test
    images), a "clean" column, then one column per corruption at `severity`.

    Image i is corrupted as evaluation corrupts the test image at position indices[i] of the test split
    (default: i), with `seed`: given ImageData.test_index of the images and evaluate.seed, the strip shows
    exactly what the models were scored on.
    """
    import matplotlib
    import torch
    from matplotlib.figure import Figure

    from kdcore.robustness import corrupt
    from kdcore.robustness.grid import _canvas  # the grid's panel paster: one imshow for all panels

    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
        raise ValueError("corruption_strip_png needs a non-empty uint8 batch of shape (N, C, H, W)")
    if not corruption_names:
        raise ValueError("corruption_strip_png needs at least one corruption")
    images = images.cpu()
    indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices).cpu()
    columns = [images] + [corrupt(images, name, severity, seed=seed, indices=indices) for name in corruption_names]
    rows = [[column[i] for column in columns] for i in range(len(images))]
    scale = max(1, STRIP_PANEL_PX // max(images.shape[-2:]))
    canvas = _canvas(rows, scale)
    width, height = canvas.shape[1] + MARGIN_PX + RIGHT_PX, canvas.shape[0] + TOP_PX + MARGIN_PX
    title = f"severity {severity}, corruption seed {seed}"
    with matplotlib.rc_context({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"],
                                "text.parse_math": False}):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        # The axes covers exactly the canvas's pixels, so nearest-neighbour drawing is 1:1.
        ax = fig.add_axes((MARGIN_PX / width, MARGIN_PX / height, canvas.shape[1] / width, canvas.shape[0] / height))
        ax.imshow(canvas, interpolation="nearest", aspect="auto")
        pitch = canvas.shape[1] / len(columns)
        ax.set_xticks([(k + 0.5) * pitch for k in range(len(columns))], ["clean", *corruption_names],
                      rotation=35, ha="left", rotation_mode="anchor", fontsize=10)
        ax.xaxis.tick_top()
        ax.set_yticks([])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.text(MARGIN_PX / width, 1 - 4 / height, title, ha="left", va="top", fontsize=11)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
