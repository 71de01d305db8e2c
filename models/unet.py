"""The study's U-Net (Ronneberger et al. 2015) with a configurable base width.

width=64 gives the study's channels 64-128-256-512-1024; 16 and 32 are cheap variants.
The network returns logits; the sigmoid is applied outside it.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 conv, padding 1 -> BatchNorm -> ReLU) x 2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """2x2 max-pool, then DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """2x2 ConvTranspose up, concatenate the skip connection, then DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # [N, C/2, 2H, 2W]
        return self.conv(torch.cat([skip, x], dim=1))  # [N, C, 2H, 2W] -> [N, out, 2H, 2W]


class OutConv(nn.Module):
    """1x1 convolution to the output channels (logits)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """Four max-pool levels; H and W must be multiples of 16 (preprocessing pads)."""

    required_multiple = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        c = [width * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024 for width 64
        self.inc = DoubleConv(in_channels, c[0])
        self.down1 = Down(c[0], c[1])
        self.down2 = Down(c[1], c[2])
        self.down3 = Down(c[2], c[3])
        self.down4 = Down(c[3], c[4])
        self.up1 = Up(c[4], c[3])
        self.up2 = Up(c[3], c[2])
        self.up3 = Up(c[2], c[1])
        self.up4 = Up(c[1], c[0])
        self.outc = OutConv(c[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)  # [N, w, H, W]
        x2 = self.down1(x1)  # [N, 2w, H/2, W/2]
        x3 = self.down2(x2)  # [N, 4w, H/4, W/4]
        x4 = self.down3(x3)  # [N, 8w, H/8, W/8]
        x5 = self.down4(x4)  # [N, 16w, H/16, W/16]
        x = self.up1(x5, x4)  # [N, 8w, H/8, W/8]
        x = self.up2(x, x3)  # [N, 4w, H/4, W/4]
        x = self.up3(x, x2)  # [N, 2w, H/2, W/2]
        x = self.up4(x, x1)  # [N, w, H, W]
        return self.outc(x)  # [N, out, H, W] logits
