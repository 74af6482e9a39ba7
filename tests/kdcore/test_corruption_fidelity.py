"""Generated corruptions against plain numpy / scipy / skimage / PIL versions of the published
make_cifar_c formulas (Hendrycks & Dietterich 2019), with the CIFAR-10-C parameters written out here
independently of kdcore.robustness.corruptions_params."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image
from skimage.color import hsv2rgb, rgb2hsv
from skimage.filters import gaussian
from skimage.util import random_noise

from kdcore.robustness import CORRUPTIONS, corrupt
from kdcore.robustness.corruptions_rng import RngContext
from kdcore.spec import CORRUPTIONS as NAMES
from tests.paths import CIFAR_TARBALL

SEVERITIES = (1, 2, 3, 4, 5)
TOL = 1 / 255


def load_cifar(n: int) -> np.ndarray | None:
    """The first n JPEGs of the tarball as (n, 32, 32, 3) uint8, or None when it is missing."""
    if not CIFAR_TARBALL.exists():
        return None
    images = []
    with tarfile.open(CIFAR_TARBALL) as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tf.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                if len(images) == n:
                    break
    return np.stack(images)


@pytest.fixture(scope="module")
def cifar64() -> np.ndarray | None:
    return load_cifar(64)


@pytest.fixture(scope="module")
def images(cifar64: np.ndarray | None) -> np.ndarray:
    """Real images when available, else smooth random ones (upsampled noise) of the same shape."""
    if cifar64 is not None:
        return cifar64[:16]
    g = torch.Generator().manual_seed(0)
    small = torch.rand(16, 3, 8, 8, generator=g)
    big = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    return (big * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def ours(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    """Our float output for uint8 HWC images, as (N, H, W, C) floats in [0, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return corrupt(x, name, severity).permute(0, 2, 3, 1).numpy().astype(np.float64)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# ---- deterministic corruptions: mean absolute difference <= 1/255 -------------------------------


def ref_contrast(x: np.ndarray, s: int) -> np.ndarray:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def ref_brightness(x: np.ndarray, s: int) -> np.ndarray:
    c = [0.05, 0.1, 0.15, 0.2, 0.3][s - 1]
    hsv = rgb2hsv(x)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


def ref_saturate(x: np.ndarray, s: int) -> np.ndarray:
    c = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][s - 1]
    hsv = rgb2hsv(x)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


def ref_gaussian_blur(x: np.ndarray, s: int) -> np.ndarray:
    c = [0.4, 0.6, 0.7, 0.8, 1][s - 1]
    return np.clip(gaussian(x, sigma=c, channel_axis=-1), 0, 1)


def ref_defocus_blur(x: np.ndarray, s: int) -> np.ndarray:
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    grid = np.arange(-8, 8 + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))  # cv2.GaussianBlur, ksize 3
    g /= g.sum()
    kernel = ndi.correlate(disk, np.outer(g, g), mode="mirror")  # cv2's default border = reflect-101
    out = np.stack([ndi.correlate(x[:, :, d], kernel, mode="mirror") for d in range(3)], -1)
    return np.clip(out, 0, 1)


def ref_zoom_blur(x: np.ndarray, s: int) -> np.ndarray:
    factors = np.arange(1, [1.06, 1.11, 1.16, 1.21, 1.26][s - 1], 0.01)
    out = np.zeros_like(x)
    h = x.shape[0]
    for z in factors:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        zoomed = ndi.zoom(x[top : top + ch, top : top + ch], (z, z, 1), order=1)
        trim = (zoomed.shape[0] - h) // 2
        out += zoomed[trim : trim + h, trim : trim + h]
    return np.clip((x + out) / (len(factors) + 1), 0, 1)


def ref_pixelate(img: Image.Image, s: int) -> np.ndarray:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    small = img.resize((int(32 * c), int(32 * c)), Image.BOX)
    return np.asarray(small.resize((32, 32), Image.BOX)) / 255


def ref_jpeg(img: Image.Image, s: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=[80, 65, 58, 50, 40][s - 1])
    return np.asarray(Image.open(buf)) / 255


FLOAT_REFS = {
    "contrast": ref_contrast,
    "brightness": ref_brightness,
    "saturate": ref_saturate,
    "gaussian_blur": ref_gaussian_blur,
    "defocus_blur": ref_defocus_blur,
    "zoom_blur": ref_zoom_blur,
}
PIL_REFS = {"pixelate": ref_pixelate, "jpeg_compression": ref_jpeg}


@pytest.mark.parametrize("name", sorted(FLOAT_REFS) + sorted(PIL_REFS))
def test_deterministic_corruption_matches_published_formula(images: np.ndarray, name: str) -> None:
    if name == "zoom_blur":
        images = images[:4]  # the scipy reference runs up to 26 zooms per image
    for s in SEVERITIES:
        if name in FLOAT_REFS:
            ref = np.stack([FLOAT_REFS[name](img / 255.0, s) for img in images])
        else:
            ref = np.stack([PIL_REFS[name](Image.fromarray(img), s) for img in images])
        got = ours(images, name, s)
        assert mad(got, ref) <= TOL, (name, s, mad(got, ref))
        assert mad(got, images / 255.0) > 0 or name == "zoom_blur", "corruption changed nothing"


GLASS_BLUR = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]  # (sigma, delta, iterations)


def ref_glass_blur(x: np.ndarray, s: int, offsets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The published loop on (N, 32, 32, 3) uint8, one (dy, dx) pair of (N, 32, 32) arrays per iteration.
    Its numpy 'swap' `x[h, w], x[h', w'] = x[h', w'], x[h, w]` goes through views, so it only copies
    x[h', w'] into x[h, w]; that copy is written here, over all images at once (the loop runs
    bottom-right to top-left, so pixel order still matters)."""
    sigma, delta, _ = GLASS_BLUR[s - 1]

    def blur(imgs: np.ndarray) -> np.ndarray:  # image by image: a 4-D gaussian would blur across images
        return np.stack([gaussian(img, sigma=sigma, channel_axis=-1) for img in imgs])

    a = np.uint8(blur(x / 255.0) * 255)
    n = np.arange(len(x))
    for dys, dxs in offsets:
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                a[n, h, w] = a[n, h + dys[:, h, w], w + dxs[:, h, w]]
    return np.clip(blur(a / 255.0), 0, 1)


def test_glass_blur_equals_the_published_sequential_loop(images: np.ndarray) -> None:
    """The published loop fed with the same random offsets as ours gives our parallel result."""
    x = images[:4]
    indices = torch.arange(4)
    for s in (3, 5):
        _, delta, iterations = GLASS_BLUR[s - 1]
        rng = RngContext(0, NAMES.index("glass_blur"), s, indices)
        offsets = [
            (rng.randint(10 + 2 * it, (32, 32), -delta, delta).numpy(),
             rng.randint(11 + 2 * it, (32, 32), -delta, delta).numpy())
            for it in range(iterations)
        ]  # fmt: skip
        assert mad(ours(x, "glass_blur", s), ref_glass_blur(x, s, offsets)) <= TOL


# ---- noises: mean and standard deviation within 2% ---------------------------------------------


def ref_noise(x: np.ndarray, name: str, s: int, rs: np.random.RandomState) -> np.ndarray:
    if name == "gaussian_noise":
        return np.clip(x + rs.normal(size=x.shape, scale=[0.04, 0.06, 0.08, 0.09, 0.10][s - 1]), 0, 1)
    if name == "shot_noise":
        c = [500, 250, 100, 75, 50][s - 1]
        return np.clip(rs.poisson(x * c) / c, 0, 1)
    if name == "impulse_noise":
        amount = [0.01, 0.02, 0.03, 0.05, 0.07][s - 1]
        return np.clip(random_noise(x, mode="s&p", amount=amount, rng=rs.randint(1 << 30)), 0, 1)
    c = [0.06, 0.1, 0.12, 0.16, 0.2][s - 1]
    return np.clip(x + x * rs.normal(size=x.shape, scale=c), 0, 1)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_noise_distribution_matches_published_formula(images: np.ndarray, name: str) -> None:
    """Pooled over several seeds (ours) and as many draws (numpy). Sparse impulse noise needs 32: with 8,
    the spread of its impulse count alone moved the std by up to 2.5% between draws (measured)."""
    draws = 32 if name == "impulse_noise" else 8
    x = np.concatenate([images / 255.0] * draws)
    rs = np.random.RandomState(0)
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    for s in SEVERITIES:
        got = torch.cat([corrupt(t, name, s, seed=seed) for seed in range(draws)])
        got = got.permute(0, 2, 3, 1).double().numpy()
        ref = ref_noise(x, name, s, rs)
        assert abs(got.mean() - ref.mean()) <= 0.02 * ref.mean(), (name, s)
        assert abs((got - x).std() - (ref - x).std()) <= 0.02 * (ref - x).std(), (name, s)


# ---- every corruption: PSNR to the clean image falls with severity ------------------------------

# Steps where the published CIFAR-10-C parameters themselves make the image closer to the clean one
# (docs/CORRUPTIONS.md, "Severity and PSNR"); every other step must not raise the PSNR.
PSNR_MAY_RISE = {
    "glass_blur": {1, 2, 4},  # more blur (sigma) smooths the pixel moves away
    "frost": {3, 4},  # less image weight with the same frost weight
    "elastic_transform": {1, 2, 3, 4},  # the affine jitter shrinks from 2.56 px (1) to 0.96 px (5)
    "spatter": {3},  # water (1-3) -> mud (4-5)
    "saturate": {2},  # 0.1x saturation (2) is further from the image than 1.5x (3)
}


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) / 255).pow(2).mean((1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


@pytest.mark.parametrize("name", NAMES)
def test_psnr_weakly_decreases_with_severity(cifar64: np.ndarray | None, name: str) -> None:
    if cifar64 is None:
        pytest.skip(f"{CIFAR_TARBALL} not found")
    x = torch.from_numpy(cifar64).permute(0, 3, 1, 2).contiguous()
    psnr = [mean_psnr(corrupt(x, name, s), x) for s in SEVERITIES]
    assert psnr[0] < 50, f"{name} severity 1 barely changes the images: {psnr}"
    rising = {s for s in range(1, 5) if psnr[s] > psnr[s - 1] + 1e-6}
    assert rising <= PSNR_MAY_RISE.get(name, set()), (name, [round(p, 2) for p in psnr])


def ref_elastic_transform(x: np.ndarray, s: int, rs: np.random.RandomState) -> np.ndarray:
    """make_cifar_c's elastic_transform on one (32, 32, 3) uint8 image, with scipy standing in for
    cv2: getAffineTransform + warpAffine (bilinear, BORDER_REFLECT_101) is an inverse affine map
    applied by ndi.affine_transform (order 1, mode 'mirror', which is reflect-101)."""
    alpha, sigma, jitter = (f * 32 for f in [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                             (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][s - 1])  # fmt: skip
    image = x.astype(np.float32) / 255
    pts1 = np.float32([[26, 26], [26, 6], [6, 6]])  # center 16 +- size // 3, as (x, y)
    pts2 = pts1 + rs.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    inv = np.linalg.solve(np.c_[pts2, np.ones(3)], pts1).T  # output (x, y, 1) -> source (x, y)
    matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])  # in (row, col) order
    offset = np.array([inv[1, 2], inv[0, 2]])
    image = np.stack([ndi.affine_transform(image[..., k], matrix, offset, order=1, mode="mirror")
                      for k in range(3)], -1)  # fmt: skip
    dx = gaussian(rs.uniform(-1, 1, size=(32, 32)), sigma, mode="reflect", truncate=3) * alpha
    dy = gaussian(rs.uniform(-1, 1, size=(32, 32)), sigma, mode="reflect", truncate=3) * alpha
    rows, cols, chans = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    coords = (rows + dy[..., None], cols + dx[..., None], chans)
    return np.clip(ndi.map_coordinates(image, coords, order=1, mode="reflect"), 0, 1)


def published(x: np.ndarray, name: str, s: int, rs: np.random.RandomState) -> np.ndarray:
    """The published formula (not ours) on (N, 32, 32, 3) uint8 images, with numpy's own randomness."""
    if name == "saturate":
        return np.stack([ref_saturate(img / 255.0, s) for img in x])
    if name == "glass_blur":
        iterations = GLASS_BLUR[s - 1][2]
        return ref_glass_blur(x, s, [tuple(rs.randint(-1, 1, size=(2, *x.shape[:3]))) for _ in range(iterations)])
    return np.stack([ref_elastic_transform(img, s, rs) for img in x])


@pytest.mark.parametrize("name", ["saturate", "glass_blur", "elastic_transform"])
def test_published_formula_itself_raises_psnr_at_the_allowed_steps(cifar64: np.ndarray | None, name: str) -> None:
    """The PSNR rises in PSNR_MAY_RISE are the published parameters' doing, not ours: the plain
    reference implementations rise at exactly the same steps on the same 64 images."""
    if cifar64 is None:
        pytest.skip(f"{CIFAR_TARBALL} not found")
    clean = torch.from_numpy(cifar64).permute(0, 3, 1, 2).float()
    rs = np.random.RandomState(0)
    psnr = [mean_psnr(torch.from_numpy(published(cifar64, name, s, rs)).permute(0, 3, 1, 2) * 255, clean)
            for s in SEVERITIES]  # fmt: skip
    rising = {s for s in range(1, 5) if psnr[s] > psnr[s - 1] + 1e-6}
    assert rising == PSNR_MAY_RISE[name], (name, [round(p, 2) for p in psnr])


def test_registry_covers_every_corruption() -> None:
    assert tuple(CORRUPTIONS) == NAMES
