"""Training-time augmentation on whole batches, in torch, on the training device.

Applied to gray images in the 0..255 range *before* :func:`liverseg.core.preprocess.preprocess`
(so it is the same whatever the normalisation) and to their masks:

* horizontal and vertical flips, each with its own probability per image (vertical
  flips matter: the study's reference slices are stored upside down);
* one affine warp per image: rotation by up to ``rotate`` degrees and zoom by a factor
  in ``[1 - scale, 1 + scale]``, about the image centre, zero fill outside (air);
  bilinear for the image, nearest for the mask, so the mask stays binary;
* gamma: ``255 * (x / 255) ** ((1 + gamma) ** u)`` (u uniform in [-1, 1]): a non-linear
  change of contrast between soft tissues, as other windows and contrast phases give;
* intensity: multiply by ``1 + u * intensity_scale`` and add ``u' * intensity_shift * 255``
  (u, u' uniform in [-1, 1]), then clip to 0..255, the range of the stored slices.

Random numbers come from a ``torch.Generator`` on the device, seeded from the config,
so a run is reproducible.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 disables one. ``true`` in a config gives these defaults."""

    hflip: float = 0.5  # probability
    vflip: float = 0.5  # probability
    rotate: float = 10.0  # max degrees either way
    scale: float = 0.1  # max relative zoom either way
    intensity_scale: float = 0.1  # max relative contrast change
    intensity_shift: float = 0.05  # max brightness shift, as a fraction of 255
    gamma: float = 0.0  # exponent in [1/(1+gamma), 1+gamma]

    @classmethod
    def from_value(cls, v: Any) -> AugmentConfig | None:
        """``false``/``null`` -> None, ``true`` -> defaults, an object -> validated keys."""
        if v is None or v is False:
            return None
        if v is True:
            return cls()
        if isinstance(v, AugmentConfig):
            return v
        if not isinstance(v, dict):
            raise TypeError(
                f"expected true, false or an object of {[f.name for f in fields(cls)]}, got {type(v).__name__} {v!r}"
            )
        known = [f.name for f in fields(cls)]
        out: dict[str, float] = {}
        for key, val in v.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {known}"
                raise ValueError(f"unknown augment key {key!r}{hint}")
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not (val >= 0 and math.isfinite(val)):
                raise ValueError(f"augment.{key} must be a finite number >= 0, got {val!r}")
            out[key] = float(val)
        cfg = cls(**out)
        for key in ("hflip", "vflip"):
            if getattr(cfg, key) > 1:
                raise ValueError(f"augment.{key} is a probability, must be <= 1, got {getattr(cfg, key)}")
        if cfg.scale >= 1:
            raise ValueError(f"augment.scale must be < 1, got {cfg.scale}")
        return cfg

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n numbers uniform in [-1, 1]."""
    return torch.rand(n, generator=gen, device=device) * 2 - 1


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 1, H, W] gray 0..255 and [N, 1, H, W] {0, 1} masks -> augmented (float32)."""
    x = images.to(torch.float32)
    m = masks.to(torch.float32)
    n, dev = x.shape[0], x.device
    h, w = x.shape[-2], x.shape[-1]

    for p, dim in ((cfg.hflip, -1), (cfg.vflip, -2)):
        if p > 0:
            flip = (torch.rand(n, generator=gen, device=dev) < p).view(n, 1, 1, 1)
            x = torch.where(flip, x.flip(dim), x)
            m = torch.where(flip, m.flip(dim), m)

    if cfg.rotate > 0 or cfg.scale > 0:
        angle = _uniform(n, gen, dev) * math.radians(cfg.rotate)
        zoom = 1 + _uniform(n, gen, dev) * cfg.scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zero = torch.zeros_like(cos)
        # output -> input sampling map in normalised coordinates; the H/W factors keep the
        # rotation rigid in pixel space when the image is not square.
        theta = torch.stack(
            [
                torch.stack([cos, -sin * (h / w), zero], dim=-1),
                torch.stack([sin * (w / h), cos, zero], dim=-1),
            ],
            dim=1,
        )  # [N, 2, 3]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    if cfg.gamma > 0:
        exponent = torch.pow(1 + cfg.gamma, _uniform(n, gen, dev)).view(n, 1, 1, 1)
        x = 255.0 * torch.pow((x / 255.0).clamp(0.0, 1.0), exponent)

    if cfg.intensity_scale > 0 or cfg.intensity_shift > 0:
        gain = 1 + _uniform(n, gen, dev).view(n, 1, 1, 1) * cfg.intensity_scale
        shift = _uniform(n, gen, dev).view(n, 1, 1, 1) * (cfg.intensity_shift * 255.0)
        x = (x * gain + shift).clamp(0.0, 255.0)
    return x, m
