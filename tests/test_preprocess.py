"""The one preprocessing function: normalisation, resize, padding and crop-back."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from liverseg.core.preprocess import Preprocessing, pad_to_multiple, postprocess, preprocess, to_gray_range


def u8(h: int, w: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, h, w), generator=g, dtype=torch.uint8)


def test_scale_divides_by_255():
    x = torch.tensor([[[[0, 51, 255], [102, 204, 1]]]], dtype=torch.uint8)  # [1, 1, 2, 3]
    y = preprocess(x, Preprocessing(normalize="scale", pad_multiple=1))
    assert y.dtype == torch.float32 and y.shape == (1, 1, 2, 3)
    expected = torch.tensor([[[[0.0, 0.2, 1.0], [0.4, 0.8, 1 / 255]]]])
    torch.testing.assert_close(y, expected)


def test_zscore_is_per_image():
    x = torch.cat([u8(16, 16, seed=1), (u8(16, 16, seed=2) // 4)])  # two images with different statistics
    y = preprocess(x, Preprocessing(normalize="zscore", pad_multiple=1))
    for i in range(2):
        assert float(y[i].mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(y[i].std()) == pytest.approx(1.0, abs=1e-4)
    # each image on its own gives the same result as in the batch
    torch.testing.assert_close(preprocess(x[1:], Preprocessing(normalize="zscore", pad_multiple=1)), y[1:])


def test_zscore_of_a_constant_image_is_finite():
    x = torch.full((1, 1, 8, 8), 77, dtype=torch.uint8)
    y = preprocess(x, Preprocessing(normalize="zscore", pad_multiple=1))
    assert torch.isfinite(y).all() and float(y.abs().max()) == 0.0


def test_raw_window_maps_to_gray_range():
    hu = torch.tensor([[[[-1000.0, -100.0, 0.0, 40.0, 140.0, 3000.0]]]])
    g = to_gray_range(hu, window=(-100.0, 155.0), raw=True)
    # (clamp(x, -100, 155) + 100) * 255 / 255 = clamp + 100
    torch.testing.assert_close(g, torch.tensor([[[[0.0, 0.0, 100.0, 140.0, 240.0, 255.0]]]]))
    # without raw the window is ignored (the PNG's 0..255 are already gray levels)
    torch.testing.assert_close(to_gray_range(hu, window=(-100.0, 155.0)), hu)


@pytest.mark.parametrize("h,w,multiple", [(64, 64, 16), (50, 37, 16), (31, 33, 32), (17, 16, 16), (5, 7, 1)])
def test_padding_to_multiple_bottom_right(h, w, multiple):
    x = u8(h, w).float()
    y = pad_to_multiple(x, multiple)
    assert y.shape[-2] % multiple == 0 and y.shape[-1] % multiple == 0
    assert y.shape[-2] - h < multiple and y.shape[-1] - w < multiple
    torch.testing.assert_close(y[..., :h, :w], x)  # the image stays top-left
    assert float(y[..., h:, :].abs().sum()) == 0.0 and float(y[..., :, w:].abs().sum()) == 0.0


@pytest.mark.parametrize("h,w", [(50, 37), (64, 64), (100, 23)])
def test_postprocess_crops_back_to_the_input_size(h, w):
    pp = Preprocessing(pad_multiple=16)
    x = u8(h, w, n=2)
    z = preprocess(x, pp)
    assert z.shape[-2] % 16 == 0 and z.shape[-1] % 16 == 0
    back = postprocess(z, pp, h, w)  # identity "network": crop-back must return the scaled input
    assert back.shape == (2, 1, h, w)
    torch.testing.assert_close(back, x.float() / 255.0)


def test_resize_and_back():
    pp = Preprocessing(size=(32, 48), pad_multiple=16)
    x = u8(50, 70, n=3)
    z = preprocess(x, pp)
    assert z.shape == (3, 1, 32, 48)  # already multiples of 16: no padding
    back = postprocess(z, pp, 50, 70)
    assert back.shape == (3, 1, 50, 70)
    # a constant image survives resize and back exactly
    c = torch.full((1, 1, 50, 70), 128, dtype=torch.uint8)
    torch.testing.assert_close(postprocess(preprocess(c, pp), pp, 50, 70), torch.full((1, 1, 50, 70), 128 / 255))


def test_resize_to_a_size_that_needs_padding_crops_before_upsampling():
    pp = Preprocessing(size=(40, 24), pad_multiple=16)
    z = preprocess(torch.full((1, 1, 80, 60), 255, dtype=torch.uint8), pp)
    assert z.shape == (1, 1, 48, 32)
    assert float(z[..., 40:, :].abs().max()) == 0.0  # the padding is zero
    back = postprocess(z, pp, 80, 60)
    # the zero padding must be cropped before resizing back, or zeros would bleed into the edge
    torch.testing.assert_close(back, torch.ones(1, 1, 80, 60))


def test_preprocessing_validation():
    with pytest.raises(ValueError, match="normalize"):
        Preprocessing(normalize="minmax")
    with pytest.raises(ValueError, match="size"):
        Preprocessing(size=(0, 10))
    with pytest.raises(ValueError, match="size"):
        Preprocessing(size=(10, 10, 10))  # type: ignore[arg-type]  # the wrong shape is the point
    with pytest.raises(ValueError, match="pad_multiple"):
        Preprocessing(pad_multiple=0)
    with pytest.raises(ValueError, match="window"):
        Preprocessing(window=(100.0, 100.0))
    pp = Preprocessing(size=[256.0, 128], pad_multiple="32", window=[-100, 155])  # type: ignore[arg-type]
    assert pp.size == (256, 128) and pp.pad_multiple == 32 and pp.window == (-100.0, 155.0)


def test_preprocessing_dict_round_trip():
    for pp in (Preprocessing(), Preprocessing(normalize="zscore", size=(96, 80), pad_multiple=32, window=(-50, 200))):
        d = pp.to_dict()
        assert isinstance(d["window"], list) and (d["size"] is None or isinstance(d["size"], list))
        assert Preprocessing.from_dict(d) == pp
        import json

        assert Preprocessing.from_dict(json.loads(json.dumps(d))) == pp  # survives JSON
    assert Preprocessing().to_dict() == {"normalize": "scale", "size": None, "pad_multiple": 16, "window": [0.0, 255.0]}
    with pytest.raises(ValueError, match="unknown preprocessing key"):
        Preprocessing.from_dict({"normalize": "scale", "mean": 0.5})


def test_preprocessing_is_frozen():
    pp = Preprocessing()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pp.normalize = "zscore"  # type: ignore[misc]


def test_a_slice_without_contrast_gets_no_liver_under_zscore():
    """All air, one gray value, or noise under 5 gray levels: probability 0 (z-score would invent contrast)."""
    import numpy as np
    import torch

    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import SegmentationPipeline, UNet

    torch.manual_seed(0)
    net = UNet(width=4).eval()
    bias = net.outc.conv.bias
    assert bias is not None
    with torch.no_grad():
        bias.fill_(5.0)  # a network that calls everything liver
    rng = np.random.default_rng(0)
    blank = [np.zeros((32, 32)), np.full((32, 32), 120.0), 100 + rng.integers(0, 5, (32, 32))]
    body = rng.integers(0, 255, (32, 32))
    x = torch.from_numpy(np.stack([*blank, body]).astype(np.uint8))[:, None]
    for pp, gated in ((Preprocessing(normalize="zscore"), True), (Preprocessing(normalize="scale"), False)):
        with torch.no_grad():
            prob, mask = SegmentationPipeline(net, pp).eval()(x)
        per_slice = mask.flatten(1).sum(1).tolist()
        assert per_slice[3] == 32 * 32  # the slice with contrast keeps the network's answer
        assert (per_slice[:3] == [0, 0, 0]) == gated, (pp.normalize, per_slice)
    hu = torch.full((1, 1, 32, 32), -1000.0)  # an air slice of a CT volume, windowed to nothing
    pp = Preprocessing(normalize="zscore", window=(-100.0, 200.0))
    with torch.no_grad():
        prob, _ = SegmentationPipeline(net, pp, raw=True).eval()(hu)
    assert float(prob.max()) == 0.0
