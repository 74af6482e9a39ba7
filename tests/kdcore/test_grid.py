"""The corruption grid PNG: size follows the layout, content is an image, specs of both kinds load."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdcore.robustness.grid import (
    GAP_PX,
    LEFT_PX,
    TOP_PX,
    grid_from_dataset_spec,
    grid_size_pixels,
    render_grid,
)
from kdcore.spec import CORRUPTIONS
from tests.paths import CIFAR_TARBALL


def _picture() -> torch.Tensor:
    """A 32 px colour image with edges and gradients, so every corruption visibly changes it."""
    ramp = torch.linspace(0, 255, 32)
    r = ramp.view(1, 32).expand(32, 32)
    g = ramp.view(32, 1).expand(32, 32)
    b = torch.zeros(32, 32)
    b[8:24, 8:24] = 230
    return torch.stack([r, g, b]).round().to(torch.uint8)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_full_grid_is_large_sharp_and_not_blank(tmp_path):
    out = render_grid(_picture(), tmp_path / "sub" / "grid.png", title="test picture")
    image = Image.open(out)
    assert image.size == grid_size_pixels(len(CORRUPTIONS), 6)  # a clean column + 5 severities
    width, height = image.size
    assert height > width  # 19 rows, 6 columns
    assert height >= len(CORRUPTIONS) * 3 * 32  # every 32 px panel drawn at least 3x
    pixels = _png(out)
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # many colours: images, not just text


def _panel(pixels: np.ndarray, row: int, col: int) -> np.ndarray:
    """Panel (row, col) of a grid of 32 px images: the layout maps the image canvas 1:1 onto the PNG."""
    pitch = 3 * 32 + GAP_PX
    top, left = TOP_PX + row * pitch + GAP_PX // 2, LEFT_PX + col * pitch + GAP_PX // 2
    return pixels[top:top + 96, left:left + 96]


def test_panels_sit_where_the_layout_says_and_are_upscaled_by_repetition(tmp_path):
    out = render_grid(
        _picture(), tmp_path / "small.png", corruptions=["gaussian_noise", "fog"], severities=[1, 5]
    )
    width, height = Image.open(out).size
    assert (width, height) == grid_size_pixels(2, 3) and width > height
    pixels = _png(out)
    upscaled = _picture().permute(1, 2, 0).numpy().repeat(3, axis=0).repeat(3, axis=1)
    for row in range(2):
        assert np.array_equal(_panel(pixels, row, 0), upscaled)  # the "clean" column, pixel for pixel
    noise_1, noise_5 = (np.abs(_panel(pixels, 0, col) - upscaled).mean() for col in (1, 2))
    assert 0 < noise_1 < noise_5  # severity grows from left to right


def test_grayscale_image(tmp_path):
    gray = _picture()[:1]
    out = render_grid(gray, tmp_path / "gray.png", corruptions=["gaussian_noise", "contrast"], severities=[3])
    assert Image.open(out).size == grid_size_pixels(2, 2)
    assert _png(out).std() > 20


def test_rejects_a_batch():
    with pytest.raises(ValueError, match="uint8 image"):
        render_grid(_picture()[None], "unused.png")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """One folder of class folders (root/<class>/*.jpg; kdcore.data splits off the test images):
    the first 12 training JPEGs of the first two classes in the archive, so only its start is read."""
    if not CIFAR_TARBALL.is_file():
        pytest.skip(f"{CIFAR_TARBALL} not found")
    root = tmp_path_factory.mktemp("images")
    taken: dict[str, int] = {}
    with tarfile.open(CIFAR_TARBALL) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            if parts[1] not in taken and len(taken) == 2:
                break
            if taken.setdefault(parts[1], 0) < 12:
                taken[parts[1]] += 1
                (root / parts[1]).mkdir(exist_ok=True)
                (root / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())
    return root


@pytest.mark.parametrize("as_job", [False, True])
def test_grid_from_a_dataset_or_job_spec(tmp_path, image_folder, as_job):
    dataset = {"source": "imagefolder", "root": str(image_folder)}
    spec = dataset if not as_job else {
        "dataset": dataset, "teacher": {"arch": "resnet20", "train": {}}, "student": {"arch": "resnet8"},
        "evaluate": {"seed": 3},
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    out = grid_from_dataset_spec(
        spec_path, tmp_path / "grid.png", index=1, cache_dir=tmp_path / "cache", corruptions=["fog", "snow"]
    )
    assert Image.open(out).size == grid_size_pixels(2, 6)
    assert _png(out).std() > 20
