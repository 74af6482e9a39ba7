"""Batched augmentations (kdcore.data.augment) and the in-memory BatchLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from kdcore.data import BatchLoader, normalize
from kdcore.data.augment import AUGMIX_OPS, _apply_ops, augmix, crop_flip, crop_padding, standard_augment
from kdcore.spec import DATASET_SOURCES, FLIP_BY_SOURCE, TrainRecipe, resolve_flip


def _images(n: int, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=generator)


def _smooth_image(size: int = 32) -> torch.Tensor:
    """One RGB image with smooth structure, so resampling differences stay small."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    planes = [128 + 100 * torch.sin(xx / 5.0 + k) * torch.cos(yy / 7.0 - k) for k in range(3)]
    return torch.stack(planes).round().to(torch.uint8)[None]


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[r, c] = img[r + dy, c + dx], zero outside: the reference for a crop of a padded image."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    for r in range(h):
        for c in range(w):
            if 0 <= r + dy < h and 0 <= c + dx < w:
                out[:, r, c] = img[:, r + dy, c + dx]
    return out


def test_crop_padding_rule():
    assert [crop_padding(s) for s in (8, 16, 28, 32, 224)] == [1, 2, 3, 4, 4]


def test_crop_of_padded_image_is_a_shifted_image():
    x = _images(4)
    oy, ox = torch.tensor([0, 2, 1, 2]), torch.tensor([1, 0, 2, 2])
    out = crop_flip(x, oy, ox, torch.zeros(4, dtype=torch.bool), pad=1)
    for i in range(4):
        assert torch.equal(out[i], _shifted(x[i], int(oy[i]) - 1, int(ox[i]) - 1))


def test_flip_flips_and_keeps_the_others():
    x = _images(3)
    flip = torch.tensor([True, False, True])
    out = crop_flip(x, torch.full((3,), 2), torch.full((3,), 2), flip, pad=2)  # centred crop
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[2], x[2].flip(-1))
    assert torch.equal(out[1], x[1])


def test_standard_augment_yields_crops_and_flips_of_each_input():
    x = _images(16)
    out = standard_augment(x, torch.Generator().manual_seed(1), flip=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    pad = crop_padding(8)
    for i in range(len(x)):
        candidates = [
            _shifted(img, dy, dx)
            for img in (x[i], x[i].flip(-1))
            for dy in range(-pad, pad + 1)
            for dx in range(-pad, pad + 1)
        ]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, x)  # 16 images: some were moved or flipped
    again = standard_augment(x, torch.Generator().manual_seed(1), flip=True)
    assert torch.equal(out, again)


def _one_op(x: torch.Tensor, name: str, level: float) -> torch.Tensor:
    n = len(x)
    return _apply_ops(x, torch.full((n,), AUGMIX_OPS.index(name)), torch.full((n,), level))


def test_pixel_ops_follow_the_reference_levels():
    x = torch.tensor([[[[0, 100, 181, 182, 200, 255]]]], dtype=torch.uint8)
    # level 2.9: posterize keeps 4 - int(1.16) = 3 bits; solarize threshold 256 - int(74.24) = 182
    assert _one_op(x, "posterize", 2.9).flatten().tolist() == [v & 0xE0 for v in x.flatten().tolist()]
    assert _one_op(x, "solarize", 2.9).flatten().tolist() == [0, 100, 181, 73, 55, 0]
    batch = _images(5, size=16)
    assert torch.equal(_one_op(batch, "equalize", 1.0), TF.equalize(batch))
    assert torch.equal(_one_op(batch, "autocontrast", 1.0), TF.autocontrast(batch))


def test_translate_moves_whole_pixels():
    x = _images(2, size=32)
    out = _one_op(x, "translate_x", 1.0)  # int(1.0 * 32/3 / 10) = 1 px; positive: content moves left
    assert torch.equal(out[..., :, :-1], x[..., :, 1:]) and not out[..., :, -1].any()
    out = _one_op(x, "translate_y", -1.0)
    assert torch.equal(out[..., 1:, :], x[..., :-1, :]) and not out[..., 0, :].any()


def test_ops_skip_images_with_code_minus_one():
    x = _images(2, size=32)
    code = torch.tensor([-1, AUGMIX_OPS.index("rotate")])
    out = _apply_ops(x, code, torch.tensor([2.9, 2.9]))
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1])


def _pil_affine(matrix):
    return lambda im: im.transform(im.size, Image.AFFINE, matrix, resample=Image.BILINEAR)


@pytest.mark.parametrize(("name", "pil_op"), [
    ("rotate", lambda im: im.rotate(8, resample=Image.BILINEAR)),  # level 2.9 -> int(8.7) = 8 degrees
    ("shear_x", _pil_affine((1, 0.087, 0, 0, 1, 0))),  # level 2.9 -> 2.9 * 0.3 / 10 = 0.087
    ("shear_y", _pil_affine((1, 0, 0, 0.087, 1, 0))),
])
def test_geometric_ops_match_pil_direction_and_size(name, pil_op):
    x = _smooth_image()
    ours = _one_op(x, name, 2.9).float()
    ref = torch.from_numpy(np.array(pil_op(Image.fromarray(x[0].permute(1, 2, 0).numpy())))).permute(2, 0, 1)
    opposite = _one_op(x, name, -2.9).float()
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # borders: fill conventions differ
    err = (ours - ref.float()).abs()[inner].mean()
    assert err < 2.0
    assert (opposite - ref.float()).abs()[inner].mean() > 3 * err


def test_augmix_range_shape_determinism_and_change():
    x = _images(12, size=16)
    out = augmix(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augmix(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augmix(x, torch.Generator().manual_seed(1)))
    change = (out - x.float() / 255).abs().flatten(1).mean(1)
    assert (change > 1e-3).sum() >= 10  # m ~ U(0, 1) can be tiny for an image or two, not for most


def test_flip_is_off_by_default_for_digits_only():
    """A mirrored digit is another symbol (or none): digits, mnist and svhn do not flip unless asked."""
    assert set(FLIP_BY_SOURCE) == set(DATASET_SOURCES) and TrainRecipe().flip is None
    no_flip = {"digits", "mnist", "svhn"}
    for source in DATASET_SOURCES:
        assert resolve_flip(None, source) == (source not in no_flip), source
        assert resolve_flip(True, source) is True and resolve_flip(False, source) is False


def _shifts(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    return [_shifted(img, dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)]


@pytest.mark.parametrize("flip", [False, True])
def test_loader_mirrors_only_when_flip_is_on(flip):
    """128 copies of one asymmetric image over 3 epochs: every output is a crop of the image, and a
    crop of its mirror only with flip on (where about half of them are)."""
    img = _images(1, c=1, size=8, seed=5)[0]
    x, y = img.expand(128, -1, -1, -1).contiguous(), torch.zeros(128, dtype=torch.long)
    plain, mirrored = _shifts(img, crop_padding(8)), _shifts(img.flip(-1), crop_padding(8))
    assert not any(torch.equal(a, b) for a in plain for b in mirrored)  # the test image is asymmetric
    loader = _loader(x, y, batch_size=32, flip=flip, mean=(0.0,), std=(1.0 / 255,))
    counts = {"plain": 0, "mirrored": 0}
    for epoch in range(3):
        for xb, _ in _epoch(loader, epoch):
            for out in xb.round().to(torch.uint8):
                is_plain = any(torch.equal(out, c) for c in plain)
                assert is_plain or any(torch.equal(out, c) for c in mirrored)
                counts["plain" if is_plain else "mirrored"] += 1
    if flip:
        assert 100 < counts["mirrored"] < 284
    else:
        assert counts["mirrored"] == 0


def test_augmix_clean_view_does_not_mirror_when_flip_is_off():
    img = _images(1, c=3, size=8, seed=6)[0]
    x = img.expand(16, -1, -1, -1).contiguous()
    loader = _loader(x, torch.zeros(16, dtype=torch.long), batch_size=16, augment="augmix", augmix_jsd=True,
                     flip=False, mean=(0.0,) * 3, std=(1.0 / 255,) * 3)
    xb, _ = next(iter(loader))
    plain = _shifts(img, crop_padding(8))
    assert all(any(torch.equal(out, c) for c in plain) for out in xb[:16].round().to(torch.uint8))


def _loader(x, y, **kw):
    args = dict(batch_size=8, shuffle=True, drop_last=False, augment="standard", flip=True, mean=(0.5,),
                std=(0.25,), device="cpu", seed=3)
    args.update(kw)
    return BatchLoader(x, y, **args)


def test_normalize_matches_the_formula():
    x = _images(4, c=3)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    out = normalize(x, mean, std)
    expected = (x.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert out.dtype == torch.float32 and out.device == x.device
    assert torch.allclose(out, expected, atol=1e-6)


def test_loader_batches_cover_each_image_once():
    x = torch.arange(21, dtype=torch.uint8)[:, None, None, None].expand(21, 1, 4, 4).contiguous()
    y = torch.arange(21)
    loader = _loader(x, y, augment="none", mean=(0.0,), std=(1.0,))
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(b[1]) for b in batches] == [8, 8, 5]
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert sorted(ys.tolist()) == list(range(21)) and ys.tolist() != list(range(21))
    assert torch.allclose(xs[:, 0, 0, 0] * 255, ys.float())  # each image still carries its label
    dropped = _loader(x, y, drop_last=True)
    assert len(dropped) == 2 and [len(b[1]) for b in dropped] == [8, 8]
    unshuffled = torch.cat([b[1] for b in _loader(x, y, shuffle=False)])
    assert unshuffled.tolist() == list(range(21))


def test_loader_output_is_normalised_and_channels_last():
    x = _images(64, c=3, size=8)
    flat = x.double().div(255).transpose(0, 1).flatten(1)
    mean, std = tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())
    loader = _loader(x, torch.zeros(64, dtype=torch.long), augment="none", mean=mean, std=std)
    xs = torch.cat([b[0] for b in loader])
    assert xs.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(xs.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xs.std((0, 2, 3)), torch.ones(3), atol=1e-2)


def _epoch(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("augment", ["none", "standard", "augmix"])
def test_epoch_depends_only_on_seed_and_epoch(augment):
    x, y = _images(20, c=3, size=8), torch.arange(20)
    direct = _epoch(_loader(x, y, augment=augment), 2)
    walked = _loader(x, y, augment=augment)
    for e in (0, 1, 5):
        _epoch(walked, e)
    replay = _epoch(walked, 2)
    pairs = zip(direct, replay, strict=True)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    other = _epoch(walked, 3)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(direct, other, strict=True))
    other_seed = _epoch(_loader(x, y, augment=augment, seed=4), 2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(direct, other_seed, strict=True))


def test_augmix_jsd_triples_images_not_labels():
    x, y = _images(16, c=3, size=8), torch.arange(16)
    xb, yb = next(iter(_loader(x, y, augment="augmix", augmix_jsd=True, mean=(0.5,) * 3, std=(0.25,) * 3)))
    assert xb.shape == (24, 3, 8, 8) and yb.shape == (8,)
    # The clean third is the plain crop + flip: the same draws as the "standard" loader's first batch.
    sb, sy = next(iter(_loader(x, y, augment="standard", mean=(0.5,) * 3, std=(0.25,) * 3)))
    assert torch.equal(yb, sy) and torch.allclose(xb[:8], sb)
    assert not torch.allclose(xb[8:16], xb[16:])


def test_loader_rejects_bad_input():
    with pytest.raises(ValueError):
        _loader(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        _loader(_images(4), torch.zeros(4, dtype=torch.long), augment="none", augmix_jsd=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches():
    x, y = _images(40, c=3, size=32), torch.arange(40)
    cpu = _epoch(_loader(x, y), 1)
    gpu = _epoch(_loader(x, y, device="cuda"), 1)
    for (a, ay), (b, by) in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda" and torch.equal(ay, by.cpu()) and torch.allclose(a, b.cpu())
    mixed = _epoch(_loader(x, y, augment="augmix", device="cuda"), 1)
    ref = _epoch(_loader(x, y, augment="augmix"), 1)
    for (a, _), (b, _) in zip(ref, mixed, strict=True):
        assert (a - b.cpu()).abs().mean() < 0.02  # grid_sample rounding may differ on a few pixels
