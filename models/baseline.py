"""The study's baseline CNN: five conv+ReLU+pool stages, a 1x1 conv, x32 bilinear upsampling.

Channels 64-128-256-128-64 at ``width=64`` (the study's, 738,561 parameters); ``width``
scales them (16 gives 16-32-64-32-16). The attribute names are the study's
(``conv1``..``conv5``, ``output``), so its state dict loads without renaming.
The network returns logits; the sigmoid is applied outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BaselineCNN(nn.Module):
    """Encoder only; H and W must be multiples of 32 (preprocessing pads)."""

    required_multiple = 32

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        c = [width, 2 * width, 4 * width, 2 * width, width]  # 64, 128, 256, 128, 64 for width 64
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, padding=1)
        self.conv2 = nn.Conv2d(c[0], c[1], 3, padding=1)
        self.conv3 = nn.Conv2d(c[1], c[2], 3, padding=1)
        self.conv4 = nn.Conv2d(c[2], c[3], 3, padding=1)
        self.conv5 = nn.Conv2d(c[3], c[4], 3, padding=1)
        self.output = nn.Conv2d(c[4], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = F.max_pool2d(F.relu(conv(x)), 2)  # [N, c_i, H/2^i, W/2^i]
        x = self.output(x)  # [N, out, H/32, W/32]
        # the study's order: the 1x1 conv, then the upsampling (align_corners=True, as it had)
        return F.interpolate(x, scale_factor=32, mode="bilinear", align_corners=True)  # [N, out, H, W] logits
