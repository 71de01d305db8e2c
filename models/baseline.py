"""The study's small baseline CNN: five conv+ReLU+pool stages, 1x1 conv, x32 upsample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvPool(nn.Module):
    """3x3 conv (padding 1) -> ReLU -> 2x2 max-pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv(x)))


class BaselineCNN(nn.Module):
    """Encoder only; H and W must be multiples of 32 (preprocessing pads)."""

    required_multiple = 32

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        c = [width * 2**i for i in range(5)]  # 16, 32, 64, 128, 256 for width 16
        chans = [in_channels, *c]
        self.stages = nn.Sequential(*(ConvPool(chans[i], chans[i + 1]) for i in range(5)))
        self.classifier = nn.Conv2d(c[-1], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)  # [N, 16w, H/32, W/32]
        x = self.classifier(x)  # [N, out, H/32, W/32]
        return F.interpolate(x, scale_factor=32, mode="bilinear", align_corners=False)  # [N, out, H, W] logits
