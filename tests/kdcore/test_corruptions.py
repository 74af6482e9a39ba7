"""Behaviour of kdcore.robustness.corrupt: dtypes, shapes, sizes, determinism, errors, the RNG."""

from __future__ import annotations

import pytest
import torch

from kdcore.robustness import CORRUPTIONS, corrupt
from kdcore.robustness.corruptions_rng import MASK32, RngContext, mix32, mix32_int
from kdcore.spec import CORRUPTIONS as NAMES

RANDOM_CORRUPTIONS = [
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
    "snow", "frost", "fog", "spatter", "elastic_transform",
]  # fmt: skip


def smooth_images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 images with structure at several scales (upsampled noise), so blurs change them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, max(2, size // 4), max(2, size // 4), generator=g)
    fine = torch.rand(n, channels, size, size, generator=g)
    img = 0.8 * torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") + 0.2 * fine
    return (img * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def batch64() -> torch.Tensor:
    return smooth_images(64)


def test_registry_keys_follow_the_spec() -> None:
    assert tuple(CORRUPTIONS) == NAMES and len(NAMES) == 19


@pytest.mark.parametrize("name", NAMES)
def test_uint8_and_float_inputs_keep_dtype_shape_and_agree(name: str) -> None:
    x = smooth_images(4)
    for severity in (1, 2, 3, 4, 5):
        out8 = corrupt(x, name, severity, seed=3)
        assert out8.dtype == torch.uint8 and out8.shape == x.shape
        for dtype in (torch.float32, torch.float64) if severity == 5 else (torch.float32,):
            outf = corrupt(x.to(dtype) / 255, name, severity, seed=3)
            assert outf.dtype == dtype and outf.shape == x.shape
            assert 0 <= float(outf.min()) and float(outf.max()) <= 1
            # the uint8 result is the rounded float result
            assert (outf.double() * 255 - out8.double()).abs().max() <= 0.5 + 1e-3, (name, severity)
    assert not torch.equal(corrupt(x, name, 5), x), f"{name} severity 5 left the images unchanged"


@pytest.mark.parametrize("name", NAMES)
def test_image_depends_on_its_index_not_on_the_batch(batch64: torch.Tensor, name: str) -> None:
    full = corrupt(batch64, name, 4, seed=7)
    for i in (0, 17, 63):
        single = corrupt(batch64[i : i + 1], name, 4, seed=7, indices=torch.tensor([i]))
        assert torch.equal(single[0], full[i]), (name, i)
    # a different order of the same images gives the same per-image results
    perm = torch.tensor([5, 2, 9])
    assert torch.equal(corrupt(batch64[perm], name, 4, seed=7, indices=perm), full[perm])


@pytest.mark.parametrize("name", RANDOM_CORRUPTIONS)
def test_seed_and_index_change_the_random_draws(name: str) -> None:
    x = smooth_images(2)
    base = corrupt(x, name, 3, seed=0)
    assert torch.equal(base, corrupt(x, name, 3, seed=0))
    assert not torch.equal(base, corrupt(x, name, 3, seed=1))
    same_image = x[:1].expand(2, -1, -1, -1)
    twins = corrupt(same_image, name, 3, seed=0)
    assert not torch.equal(twins[0], twins[1]), "two indices drew the same randomness"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "size"), [(1, 32), (3, 8), (3, 64), (1, 8)])
def test_grayscale_and_other_sizes(name: str, channels: int, size: int) -> None:
    x = smooth_images(2, channels=channels, size=size)
    for severity in (1, 5):
        out = corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.uint8
    if size >= 32:  # at 8 px the size rule shrinks the weakest blurs below a grey level
        assert (corrupt(x, name, 5).float() - x.float()).abs().mean() > 0.1, name


def test_grayscale_colour_corruption_is_the_luminance_of_the_rgb_result() -> None:
    gray = smooth_images(2, channels=1)
    via_rgb = corrupt(gray.expand(-1, 3, -1, -1).float() / 255, "brightness", 3)
    lum = (via_rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(corrupt(gray.float() / 255, "brightness", 3), lum, atol=1e-6)


def test_bad_arguments_are_rejected() -> None:
    x = smooth_images(1)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match="C 1 or 3"):
        corrupt(x[:, :2], "fog", 1)
    with pytest.raises(ValueError, match="indices"):
        corrupt(x, "fog", 1, indices=torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        corrupt(x.to(torch.int32), "fog", 1)


def test_float_input_out_of_range_is_clamped_first() -> None:
    x = smooth_images(1).float() / 255
    assert torch.equal(corrupt(x * 2 - 0.5, "contrast", 1), corrupt((x * 2 - 0.5).clamp(0, 1), "contrast", 1))


def test_mixer_matches_its_python_version_and_stays_32_bit() -> None:
    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789]
    tensor = mix32(torch.tensor(values, dtype=torch.int64))
    assert tensor.tolist() == [mix32_int(v) for v in values]
    assert int(tensor.min()) >= 0 and int(tensor.max()) <= MASK32


def test_rng_uniform_and_normal_statistics() -> None:
    rng = RngContext(0, 0, 1, torch.arange(64))
    u = rng.uniform(1, (64, 64))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    z = rng.normal(2, (64, 64))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    # neighbouring elements and images are uncorrelated
    flat = z.view(64, -1)
    assert abs(float((flat[:, 1:] * flat[:, :-1]).mean())) < 0.01
    assert abs(float((flat[1:] * flat[:-1]).mean())) < 0.01
    k = rng.randint(3, (1000,), -1, 1)
    assert set(k.unique().tolist()) == {-1, 0}
