"""The one preprocessing function, used by training, export and inference.

Raw pixels as stored on disk (uint8 0..255, or float raw intensities such as CT
Hounsfield units) go in; the network's float input comes out. The settings are a
small frozen dataclass that is stored in every checkpoint and every exported model
file, so no client ever re-implements them.

Order of operations (all in torch, so the same code runs inside exported graphs):

1. ``to_gray_range``: float32; raw intensities (``input_kind == "hu"``) are clipped to
   ``window`` and mapped linearly to 0..255, the look of the study's PNG slices.
2. normalisation: ``"scale"`` divides by 255 (the study's default); ``"zscore"``
   subtracts each image's mean and divides by its standard deviation (+1e-6).
3. optional resize to ``size`` (bilinear, ``align_corners=False``).
4. zero padding on the bottom and right to a multiple of ``pad_multiple``.

``postprocess`` undoes 4 and 3 on the network's logits, so outputs always have the
input's height and width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("scale", "zscore")


@dataclass(frozen=True)
class Preprocessing:
    """Settings of :func:`preprocess`; part of every checkpoint and exported model."""

    normalize: str = "scale"
    size: tuple[int, int] | None = None
    pad_multiple: int = 16
    window: tuple[float, float] = (0.0, 255.0)

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"preprocessing.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"preprocessing.size must be [height, width] > 0, got {self.size!r}")
            object.__setattr__(self, "size", size)
        if int(self.pad_multiple) < 1:
            raise ValueError(f"preprocessing.pad_multiple must be >= 1, got {self.pad_multiple!r}")
        object.__setattr__(self, "pad_multiple", int(self.pad_multiple))
        lo, hi = (float(v) for v in self.window)
        if not hi > lo:
            raise ValueError(f"preprocessing.window must be [low, high] with high > low, got {self.window!r}")
        object.__setattr__(self, "window", (lo, hi))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        d["window"] = list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing key(s): {sorted(unknown)}; valid: {sorted(known)}")
        d = dict(d)
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        if "window" in d:
            d["window"] = tuple(d["window"])
        return cls(**d)


def to_gray_range(x: torch.Tensor, window: tuple[float, float] = (0.0, 255.0), raw: bool = False) -> torch.Tensor:
    """Float32 in the 0..255 gray range. ``raw=True`` clips ``x`` to ``window`` and rescales."""
    x = x.to(torch.float32)
    if raw:
        lo, hi = window
        x = (x.clamp(lo, hi) - lo) * (255.0 / (hi - lo))
    return x


def preprocess(x: torch.Tensor, pp: Preprocessing, raw: bool = False) -> torch.Tensor:
    """[N, 1, H, W] raw pixels -> [N, 1, H', W'] network input (resized and padded)."""
    return preprocess_gray(to_gray_range(x, pp.window, raw), pp)


def preprocess_gray(x: torch.Tensor, pp: Preprocessing) -> torch.Tensor:
    """:func:`preprocess` after :func:`to_gray_range`: normalise, resize, pad."""
    if pp.normalize == "scale":
        x = x / 255.0
    else:  # zscore, per image
        x = zscore(x)
    if pp.size is not None:
        x = F.interpolate(x, size=pp.size, mode="bilinear", align_corners=False)
    return pad_to_multiple(x, pp.pad_multiple)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-6) per image, std with Bessel's correction (``torch.std``'s).

    The means are taken row by row, then over the rows: each reduction sums at most one
    image side of numbers. One reduction over all H*W pixels is what an exported graph
    runs as a single ReduceMean, and ONNX Runtime sums those 65,536 float32 values in
    order: the mean of a 256x256 slice came out 4e-5 off (relative), which moved a
    trained model's probabilities by up to 1.2e-3 against PyTorch. Two short
    reductions keep every engine within float32 rounding of the exact value.
    """
    h, w = x.shape[-2], x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
    n = h * w
    std = torch.sqrt(var * (n / (n - 1 + 1e-12)))  # no branch: traced into exported graphs as is
    return (x - mean) / (std + 1e-6)


MIN_GRAY_RANGE = 5.0  # gray levels (of 0..255, after the window) a slice must span to show a liver


def has_contrast(gray: torch.Tensor) -> torch.Tensor:
    """[N, 1, 1, 1] float: 1 where a slice's gray values (:func:`to_gray_range`'s) span at least
    :data:`MIN_GRAY_RANGE`, else 0.

    Per-image z-score maps a slice without contrast (all air, a blank or padding slice
    of a volume) to an all-zero input that no training slice looked like, or blows its
    noise up to full contrast; a trained model can then call most of it liver (one did:
    69% of an all-air slice). Such a slice cannot show a liver against its surroundings,
    so :class:`~liverseg.models.SegmentationPipeline` gives it probability 0.
    """
    hi = gray.amax(dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
    lo = gray.amin(dim=-1, keepdim=True).amin(dim=-2, keepdim=True)
    return (hi - lo >= MIN_GRAY_RANGE).to(torch.float32)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right edges so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h))


def postprocess(logits: torch.Tensor, pp: Preprocessing, height: int, width: int) -> torch.Tensor:
    """Network logits -> logits of the input's size: crop the padding, undo the resize."""
    if pp.size is not None:
        logits = logits[..., : pp.size[0], : pp.size[1]]
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits[..., :height, :width]
