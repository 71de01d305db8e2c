"""The model registry, the networks' structure, and the whole pipeline's shapes.

One tester parametrised over the registry: a model added to
``MODELS`` is checked here without new tests.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from liverseg.core.preprocess import Preprocessing
from liverseg.models import (
    DEFAULT_WIDTH,
    MODELS,
    BaselineCNN,
    SegmentationPipeline,
    UNet,
    create_model,
    required_multiple,
)

NAMES = sorted(MODELS)
TINY = {"unet": 4, "baseline": 4}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, in_channels=1, out_channels=1, width=TINY.get(name, 4)).eval()


# ---------------------------------------------------------------- registry


def test_registry_holds_the_studys_models():
    assert {"unet", "baseline"} <= set(MODELS)
    assert MODELS["unet"] is UNet and MODELS["baseline"] is BaselineCNN
    assert set(DEFAULT_WIDTH) == set(MODELS)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as e:
        create_model("resnet50")
    msg = str(e.value)
    assert "resnet50" in msg
    for name in NAMES:
        assert name in msg


def test_bad_arguments_name_the_model():
    with pytest.raises(ValueError, match="unet"):
        create_model("unet", depth=7)


@pytest.mark.parametrize("name", NAMES)
def test_default_width_is_the_studys(name):
    m = create_model(name)
    first_conv = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
    assert first_conv.out_channels == DEFAULT_WIDTH[name]


# ---------------------------------------------------------------- every registered model


@pytest.mark.parametrize("name", NAMES)
def test_network_keeps_the_size_at_its_multiple(name):
    net = tiny(name)
    k = required_multiple(name)
    assert k in (16, 32)
    with torch.inference_mode():
        for h, w in ((k, k), (2 * k, 3 * k), (4 * k, k)):
            y = net(torch.rand(2, 1, h, w))
            assert y.shape == (2, 1, h, w)
            assert y.dtype == torch.float32
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", [(64, 64), (50, 37), (33, 100), (17, 16), (128, 96)])
def test_pipeline_output_shape_equals_input_shape(name, hw):
    h, w = hw
    pipe = SegmentationPipeline(tiny(name), Preprocessing(pad_multiple=required_multiple(name))).eval()
    x = torch.randint(0, 256, (2, 1, h, w), dtype=torch.uint8)
    with torch.inference_mode():
        prob, mask = pipe(x)
    assert prob.shape == (2, 1, h, w) and mask.shape == (2, 1, h, w)
    assert prob.dtype == torch.float32 and mask.dtype == torch.uint8
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0
    assert torch.equal(mask, (prob > 0.5).to(torch.uint8))
    assert set(mask.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_with_resize_and_threshold(name):
    pipe = SegmentationPipeline(
        tiny(name), Preprocessing(size=(64, 64), pad_multiple=required_multiple(name)), threshold=0.3
    ).eval()
    x = torch.randint(0, 256, (1, 1, 90, 70), dtype=torch.uint8)
    with torch.inference_mode():
        prob, mask = pipe(x)
    assert prob.shape == (1, 1, 90, 70)
    assert torch.equal(mask, (prob > 0.3).to(torch.uint8))


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_raw_input_windows_hounsfield_units(name):
    pp = Preprocessing(window=(-100.0, 155.0), pad_multiple=required_multiple(name))
    net = tiny(name)
    raw = SegmentationPipeline(net, pp, raw=True).eval()
    gray = SegmentationPipeline(net, pp, raw=False).eval()
    hu = torch.randint(-1000, 1000, (1, 1, 32, 32)).float()
    g = ((hu.clamp(-100, 155) + 100) * (255.0 / 255.0)).round().to(torch.uint8)  # the same pixels as gray levels
    with torch.inference_mode():
        torch.testing.assert_close(raw(hu)[0], gray(g)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    net = tiny(name).train()
    y = net(torch.rand(2, 1, 32, 32))
    y.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


# ---------------------------------------------------------------- U-Net structure


def test_unet_width_64_is_the_studys_31_million_parameters():
    net = UNet(width=64)  # instantiate only: no forward pass at this width
    assert n_params(net) == pytest.approx(31.0e6, rel=0.005)
    enc = [net.inc, net.down1.conv, net.down2.conv, net.down3.conv, net.down4.conv]
    assert [blk.block[0].out_channels for blk in enc] == [64, 128, 256, 512, 1024]
    assert [blk.block[3].out_channels for blk in enc] == [64, 128, 256, 512, 1024]
    # decoder: transposed convs halve the channels, then DoubleConv after the concatenation
    ups = [net.up1, net.up2, net.up3, net.up4]
    assert [u.up.in_channels for u in ups] == [1024, 512, 256, 128]
    assert [u.up.out_channels for u in ups] == [512, 256, 128, 64]
    assert [u.conv.block[0].in_channels for u in ups] == [1024, 512, 256, 128]
    assert [u.conv.block[3].out_channels for u in ups] == [512, 256, 128, 64]
    assert net.outc.conv.in_channels == 64 and net.outc.conv.out_channels == 1
    assert net.outc.conv.kernel_size == (1, 1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4


@pytest.mark.parametrize("width,millions", [(32, 7.8), (16, 1.9)])
def test_unet_smaller_widths_match_performance_md(width, millions):
    assert n_params(UNet(width=width)) / 1e6 == pytest.approx(millions, abs=0.05)


# ---------------------------------------------------------------- baseline structure


def test_baseline_is_the_studys_738561_parameter_network():
    net = BaselineCNN()  # width 64, the study's
    assert n_params(net) == 738_561
    convs = [net.conv1, net.conv2, net.conv3, net.conv4, net.conv5]
    assert [c.out_channels for c in convs] == [64, 128, 256, 128, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert net.output.kernel_size == (1, 1) and net.output.in_channels == 64 and net.output.out_channels == 1
    assert required_multiple("baseline") == 32


@pytest.mark.parametrize("width,chans", [(16, [16, 32, 64, 32, 16]), (8, [8, 16, 32, 16, 8])])
def test_baseline_width_scales_the_studys_channels(width, chans):
    net = BaselineCNN(width=width)
    assert [c.out_channels for c in (net.conv1, net.conv2, net.conv3, net.conv4, net.conv5)] == chans


def test_baseline_is_conv_relu_pool_then_1x1_then_x32_align_corners_upsample():
    torch.manual_seed(0)
    net = BaselineCNN(width=4).eval()
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        feats = x
        for conv in (net.conv1, net.conv2, net.conv3, net.conv4, net.conv5):
            feats = nn.functional.max_pool2d(torch.relu(conv(feats)), 2)
        low = net.output(feats)  # the 1x1 conv comes before the upsampling
        assert low.shape == (1, 1, 2, 3)
        up = nn.Upsample(scale_factor=32, mode="bilinear", align_corners=True)(low)
        torch.testing.assert_close(net(x), up, atol=0, rtol=0)
        # align_corners=True: the output's corner pixels are the low-resolution corners exactly
        assert float(net(x)[0, 0, 0, 0]) == float(low[0, 0, 0, 0])
        assert float(net(x)[0, 0, -1, -1]) == float(low[0, 0, -1, -1])
        # the ReLU sits between conv and pool: a negative-only first conv gives all-zero features
        assert net.conv1.bias is not None
        net.conv1.weight.zero_()
        net.conv1.bias.fill_(-1.0)
        assert float(nn.functional.max_pool2d(torch.relu(net.conv1(x)), 2).abs().max()) == 0.0


def test_fused_unet_equals_the_network_it_was_folded_from():
    """BatchNorm folded into each convolution (with non-trivial statistics) and conv+ReLU fused: same logits."""
    import torch

    from liverseg.models import UNet
    from liverseg.models.fused import ConvReLU, fuse_for_inference

    torch.manual_seed(0)
    net = UNet(width=4)
    for m in net.modules():  # statistics and affine parameters far from the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    fused = fuse_for_inference(net)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=1e-4)
    kinds = [type(m).__name__ for m in fused.modules()]
    assert "BatchNorm2d" not in kinds
    assert sum(isinstance(m, ConvReLU) for m in fused.modules()) == 18  # 9 double convolutions
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_fused_backend_in_fp16_keeps_the_pipeline_outputs(tmp_path):
    """The GPU benchmark's fused fp16 row, run on the CPU: a probability map and a binary mask of the input's size."""
    import numpy as np

    from liverseg.benchmarks.artifacts import random_checkpoint
    from liverseg.benchmarks.backends import build_backend

    ckpt = random_checkpoint("unet", 4).save(tmp_path / "w4.pt")
    b = build_backend("torch-cuda-fp16-fused", ckpt, None)
    b.device = "cpu"  # the row's code path without a GPU
    b.setup()
    x = np.random.default_rng(0).integers(0, 255, (2, 1, 32, 32), dtype=np.uint8)
    prob, mask = b.fetch(b.run(b.prepare(x)))
    ref = build_backend("eager", ckpt, None)
    ref.setup()
    prob32, _ = ref.fetch(ref.run(ref.prepare(x)))
    assert prob.shape == mask.shape == (2, 1, 32, 32) and prob.dtype == np.float32
    assert set(np.unique(mask)) <= {0, 1}
    assert np.max(np.abs(prob - prob32)) < 5e-3  # fp16 arithmetic
