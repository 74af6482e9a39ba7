"""kdcore.models: registry, shapes on CIFAR and digits-sized inputs, stages, params, export paths."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torchvision

from kdcore.models import MODELS, build_model
from kdcore.spec import CIFAR_ARCHS, MODEL_ARCHS, TORCHVISION_ARCHS

# Building these plus a 32 px forward costs seconds each on a shared 2-core CPU: the fast suite checks
# them on digits-sized inputs (and the torchvision ones at 32 px, which their ImageNet stem needs least);
# the 32 px check of the CIFAR ones is marked slow.
HEAVY_CIFAR = {"resnet110", "resnet32x4", "wrn_40_2", "wrn_28_10", "vgg13", "vgg11"}
HEAVY_TORCHVISION = {"resnet34", "resnet50", "regnet_y_400mf", "efficientnet_b0", "mobilenet_v3_large"}
HEAVY = HEAVY_CIFAR | HEAVY_TORCHVISION


def _check(model: torch.nn.Module, x: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    with torch.no_grad():
        logits = model(x)
        feat_logits, feats = model.forward_features(x)
    assert logits.shape == (x.shape[0], num_classes)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(feat_logits, logits)
    assert len(feats) >= 3
    for f in feats:
        assert f.dim() == 4 and f.shape[0] == x.shape[0]
    heights = [f.shape[2] for f in feats]
    assert heights == sorted(heights, reverse=True), heights  # stages never grow spatially
    return feats


def test_registry_matches_spec() -> None:
    assert tuple(MODELS) == MODEL_ARCHS


@pytest.mark.parametrize("arch", [a for a in MODEL_ARCHS if a not in HEAVY])
def test_shapes_cifar_and_digits_inputs(arch: str) -> None:
    torch.manual_seed(0)
    rgb = _check(build_model(arch, 10, 3, 32).eval(), torch.randn(2, 3, 32, 32), 10)
    gray = _check(build_model(arch, 7, 1, 8).eval(), torch.randn(2, 1, 8, 8), 7)
    assert len(rgb) == len(gray)  # the stage list does not depend on input size
    assert [f.shape[1] for f in rgb] == [f.shape[1] for f in gray]


@pytest.mark.parametrize("arch", sorted(HEAVY_TORCHVISION))
def test_shapes_heavy_torchvision(arch: str) -> None:
    torch.manual_seed(0)
    _check(build_model(arch, 5).eval(), torch.randn(2, 3, 32, 32), 5)


@pytest.mark.parametrize("arch", sorted(HEAVY_CIFAR))
def test_shapes_heavy_cifar_on_digits_inputs(arch: str) -> None:
    torch.manual_seed(0)
    _check(build_model(arch, 7, 1, 8).eval(), torch.randn(2, 1, 8, 8), 7)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(HEAVY_CIFAR))
def test_shapes_heavy_cifar_on_cifar_inputs(arch: str) -> None:
    torch.manual_seed(0)
    _check(build_model(arch, 10).eval(), torch.randn(2, 3, 32, 32), 10)


def test_cifar_resnet_stages_follow_the_paper_layout() -> None:
    feats = _check(build_model("resnet8x4", 10).eval(), torch.randn(2, 3, 32, 32), 10)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]


def test_vgg_pools_before_last_block_only_for_large_inputs() -> None:
    small = _check(build_model("vgg8", 3, 3, 32).eval(), torch.randn(1, 3, 32, 32), 3)
    large = _check(build_model("vgg8", 3, 3, 64).eval(), torch.randn(1, 3, 64, 64), 3)
    assert [f.shape[2] for f in small] == [16, 8, 4, 4]
    assert [f.shape[2] for f in large] == [32, 16, 8, 4]


@pytest.mark.parametrize(("arch", "published"), [("resnet20", 0.27e6), ("resnet56", 0.86e6)])
def test_param_counts_match_published(arch: str, published: float) -> None:
    count = sum(p.numel() for p in build_model(arch, 10).parameters())
    assert abs(count - published) / published < 0.02, count


def test_init_is_deterministic_under_a_seed() -> None:
    torch.manual_seed(3)
    a = build_model("wrn_16_1", 10).state_dict()
    torch.manual_seed(3)
    b = build_model("wrn_16_1", 10).state_dict()
    torch.manual_seed(4)
    c = build_model("wrn_16_1", 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_torchvision_models_keep_stock_parameter_names() -> None:
    ours = build_model("resnet18", 10, in_channels=1)
    stock = torchvision.models.resnet18(weights=None, num_classes=10)
    assert isinstance(ours, torchvision.models.ResNet)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    stock_shapes = {k: v.shape for k, v in stock.state_dict().items()}
    assert ours_shapes.keys() == stock_shapes.keys()
    assert ours_shapes["conv1.weight"] == (64, 1, 7, 7)
    assert ours_shapes["fc.weight"] == (10, 512)


def test_every_arch_builds_on_the_meta_device() -> None:
    # The API reads parameter shapes this way, without allocating or initialising anything.
    reference = {k: v.shape for k, v in build_model("regnet_y_400mf", 10, 1).state_dict().items()}
    for arch in MODEL_ARCHS:
        with torch.device("meta"):
            model = build_model(arch, 10, in_channels=1)
        assert all(p.is_meta for p in model.parameters()), arch
        if arch == "regnet_y_400mf":
            assert {k: v.shape for k, v in model.state_dict().items()} == reference


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model arch"):
        build_model("resnet9000", 10)
    with pytest.raises(ValueError, match="image_size"):
        build_model("resnet8", 10, image_size=4)


# The CIFAR nets whose forward loops over module lists or slices channels; the others are plain chains.
@pytest.mark.parametrize("arch", ["vgg8", "mobilenetv2", "shufflenetv2"])
def test_script_and_trace_match_eager(arch: str) -> None:
    model = build_model(arch, 4, 1, 8).eval()
    x = torch.randn(2, 1, 8, 8)
    # Unoptimised execution and no re-trace check: the same graphs, seconds less on a small CPU.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.jit.trace(model, x, check_trace=False)(x), expected)


def test_trace_torchvision_with_feature_subclass() -> None:
    # Scripting torchvision models works too but takes seconds; export uses tracing.
    model = build_model("mobilenet_v3_small", 4, 1, 8).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        torch.testing.assert_close(torch.jit.trace(model, x, check_trace=False)(x), model(x))


@pytest.mark.parametrize("arch", ["resnet8", "shufflenetv2"])
def test_onnx_export_with_dynamic_batch(arch: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = build_model(arch, 4, 3, 16).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(2, 3, 16, 16),), buffer, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 16, 16)  # a batch size other than the export's
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_cifar_and_torchvision_lists_cover_the_registry() -> None:
    assert set(CIFAR_ARCHS) | set(TORCHVISION_ARCHS) == set(MODELS)
