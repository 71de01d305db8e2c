"""Count a network's floating-point operations from its layers.

Forward hooks on every ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` read the real
input and output shapes of one forward pass and add ``2 * MACs`` (one multiply and
one add per multiply-accumulate; bias adds, normalisation, activations, pooling and
resizing are not counted -- they are under 1% of a U-Net's work). The forward pass
runs on the ``meta`` device when the model allows it, so counting the 64-wide U-Net
at 512x512 takes milliseconds and no memory; otherwise it runs on the CPU.

Multiply-accumulates per layer (N batch, C channels, g groups, k kernel):

* Conv2d:          N * C_out * H_out * W_out * (C_in / g) * k_h * k_w
* ConvTranspose2d: N * C_in  * H_in  * W_in  * (C_out / g) * k_h * k_w
  (every input pixel is scattered into k_h * k_w outputs of each output channel)
* Linear:          (elements of the output) * in_features

Counted this way, the U-Net of width 64 at 512x512 is 384.7 GFLOP per slice, width 16 is 24.1
(tests/test_benchmarks.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COUNTED = ("Conv2d", "ConvTranspose2d", "Linear")


@dataclass
class FlopCount:
    """FLOPs of one forward pass, split by layer type."""

    total: int
    batch: int
    by_type: dict[str, int] = field(default_factory=dict)
    layers: int = 0
    device: str = "meta"

    @property
    def per_image(self) -> float:
        return self.total / self.batch

    @property
    def gflop_per_image(self) -> float:
        return self.per_image / 1e9


def _macs(module: Any, inp: Any, out: Any) -> int:
    import torch

    x = inp[0] if isinstance(inp, (tuple, list)) else inp
    y = out[0] if isinstance(out, (tuple, list)) else out
    kind = type(module).__name__
    if isinstance(module, torch.nn.Conv2d):
        kh, kw = module.kernel_size
        n, c_out, h_out, w_out = y.shape
        return n * c_out * h_out * w_out * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, torch.nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        n, c_in, h_in, w_in = x.shape
        return n * c_in * h_in * w_in * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, torch.nn.Linear):
        return y.numel() * module.in_features
    raise TypeError(f"no FLOP rule for {kind}")  # pragma: no cover


def count_flops(net: Any, input_shape: tuple[int, ...], *, use_meta: bool = True) -> FlopCount:
    """FLOPs of ``net`` on one input of ``input_shape`` ([N, C, H, W] network input).

    ``net`` is the bare network (not the pipeline); H and W should already be padded
    to the network's multiple, as :func:`liverseg.core.preprocess.preprocess` does.
    """
    import copy

    import torch

    counted = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    attempts = ["meta", "cpu"] if use_meta else ["cpu"]
    last_error: Exception | None = None
    for device in attempts:
        by_type: dict[str, int] = {}
        layers = 0
        try:
            if device == "meta":
                on_meta = all(p.is_meta for p in net.parameters())
                model = (net if on_meta else copy.deepcopy(net).to(device)).eval()
            else:
                model = net.eval() if not any(p.is_meta for p in net.parameters()) else None
                if model is None:
                    raise RuntimeError("the network lives on the meta device and could not run there")
        except Exception as e:  # some modules cannot move to meta
            last_error = e
            continue
        handles = []

        def hook(module: Any, inp: Any, out: Any, counts: dict[str, int] = by_type) -> None:
            nonlocal layers
            name = type(module).__name__
            counts[name] = counts.get(name, 0) + 2 * _macs(module, inp, out)
            layers += 1

        for m in model.modules():
            if isinstance(m, counted):
                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(torch.zeros(input_shape, dtype=torch.float32, device=device))
        except Exception as e:  # an op without a meta kernel: count on the CPU instead
            last_error = e
            continue
        finally:
            for h in handles:
                h.remove()
        return FlopCount(
            total=sum(by_type.values()), batch=int(input_shape[0]), by_type=by_type, layers=layers, device=device
        )
    raise RuntimeError(f"cannot count FLOPs of {type(net).__name__}: {last_error}")


def padded_size(size: int, multiple: int) -> int:
    return size + (multiple - size % multiple) % multiple


def model_gflop_per_image(model_name: str, model_args: dict[str, Any], height: int, width: int | None = None) -> float:
    """GFLOP of one ``height x width`` slice through a registered model (padded as preprocessing does)."""
    import torch

    from liverseg.models import create_model, required_multiple

    width = height if width is None else width
    mult = required_multiple(model_name)
    try:  # build on the meta device: no weights initialised, no memory
        with torch.device("meta"):
            net = create_model(model_name, **model_args)
    except Exception:
        net = create_model(model_name, **model_args)
    c_in = int(model_args.get("in_channels", 1))
    fc = count_flops(net, (1, c_in, padded_size(height, mult), padded_size(width, mult)))
    return fc.gflop_per_image
