"""The whole model: raw pixels in, probability map and binary mask out.

This is what gets exported: the checkpoint's preprocessing and threshold live inside
the graph, so a client needs nothing but the model file.
"""

from __future__ import annotations

import torch
from torch import nn

from liverseg.core.preprocess import Preprocessing, has_contrast, postprocess, preprocess_gray, to_gray_range


class SegmentationPipeline(nn.Module):
    """[N, 1, H, W] raw pixels -> (probability float32 [N,1,H,W], mask uint8 [N,1,H,W]).

    ``raw=False``: uint8 gray values as stored in PNG slices. ``raw=True``: float32
    raw intensities (CT Hounsfield units) windowed by ``preprocessing.window``.
    With per-image z-score, a slice without contrast gets probability 0
    (:func:`~liverseg.core.preprocess.has_contrast`).
    """

    def __init__(self, net: nn.Module, preprocessing: Preprocessing, threshold: float = 0.5, raw: bool = False) -> None:
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing
        self.threshold = float(threshold)
        self.raw = raw

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2], x.shape[-1]
        gray = to_gray_range(x, self.preprocessing.window, self.raw)  # [N, 1, H, W] 0..255
        z = preprocess_gray(gray, self.preprocessing)  # [N, 1, H', W'] padded
        logits = postprocess(self.net(z), self.preprocessing, h, w)  # [N, 1, H, W]
        prob = torch.sigmoid(logits.float())
        if self.preprocessing.normalize == "zscore":
            prob = prob * has_contrast(gray)
        mask = (prob > self.threshold).to(torch.uint8)
        return prob, mask
