"""The study's colouring of a prediction, drawn with numpy alone (inference imports it).

:func:`overlay_rgb` draws a prediction against the truth -- true positive white,
false positive blue, false negative red -- or, without a truth, the prediction's
outline on the image. :func:`save_overlay` writes it as an RGB PNG with Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The study's colours (RGB).
TP_COLOR = (255, 255, 255)
FP_COLOR = (0, 0, 255)
FN_COLOR = (255, 0, 0)
# True positives where they must stand out from bright liver tissue (reports): green. The study drew
# them white, which vanishes over the liver itself; false positives and negatives keep its colours.
TP_VISIBLE_COLOR = (0, 200, 0)
# Outline of a prediction when no truth is known.
OUTLINE_COLOR = (0, 255, 0)
DEFAULT_ALPHA = 0.65


def _as_gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float64)), 0, 255).astype(np.uint8)
    return img


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = _as_gray(image)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    raise ValueError(f"image must be HxW or HxWx3, got shape {img.shape}")


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion; pixels outside the image count as background."""
    p = np.pad(mask, 1, mode="constant", constant_values=False)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """bool [H, W]: the inner band of ``thickness`` pixels along the mask's border."""
    m = np.asarray(mask, dtype=bool)
    inner = m
    for _ in range(max(1, int(thickness))):
        inner = _erode(inner)
    return m & ~inner


def _blend_table(color: Sequence[int], alpha: float) -> np.ndarray:
    """uint8 [256, 3]: each gray level blended towards ``color`` (float64, rounded to nearest)."""
    levels = np.arange(256, dtype=np.float64)[:, None]
    return np.clip(np.rint(alpha * np.asarray(color, dtype=np.float64) + (1.0 - alpha) * levels), 0, 255).astype(
        np.uint8
    )


def _blend(rgb: np.ndarray, where: np.ndarray, color: Sequence[int], alpha: float) -> None:
    """``rgb[where]`` blended towards ``color``, through the table of each channel's 256 levels."""
    if not where.any():
        return
    rgb[where] = _blend_table(color, alpha)[rgb[where], np.arange(3)]


def _blend_gray(
    gray: np.ndarray, pred: np.ndarray, truth: np.ndarray, tp_color: Sequence[int], alpha: float
) -> np.ndarray:
    """The study's colouring of a gray image in one table lookup per pixel, as :func:`_blend` colours its RGB copy.

    Region code (prediction + 2 x truth) and gray level index one [4 x 256, 3] table: a
    512x512 slice with a large liver took 14.6 ms through three masked blends, 3.7 ms this way (2-vCPU EPYC).
    """
    table = np.empty((4, 256, 3), dtype=np.uint8)
    table[0] = np.arange(256, dtype=np.uint8)[:, None]  # true negative: the image itself
    table[1] = _blend_table(FP_COLOR, alpha)
    table[2] = _blend_table(FN_COLOR, alpha)
    table[3] = _blend_table(tp_color, alpha)
    index = (pred.astype(np.intp) | (truth.astype(np.intp) << 1)) << 8 | gray
    return np.take(table.reshape(-1, 3), index, axis=0)


def overlay_rgb(
    image_u8: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    thickness: int | None = None,
    tp_color: Sequence[int] = TP_COLOR,
) -> np.ndarray:
    """uint8 [H, W, 3]: the prediction drawn on the gray image.

    With ``truth``: the study's colouring, blended with ``alpha`` over the image --
    true positive white, false positive blue, false negative red, true negative
    left as the image (``tp_color``: :data:`TP_VISIBLE_COLOR` where white would not show). Without: the
    prediction's outline (green, opaque) of
    ``thickness`` pixels (default: 1 per 256 pixels of the larger side, at least 1).
    """
    img = np.asarray(image_u8)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f"image must be HxW or HxWx3, got shape {img.shape}")
    h, w = img.shape[:2]
    p = np.asarray(pred, dtype=bool)
    if p.shape != (h, w):
        raise ValueError(f"prediction shape {p.shape} != image shape {(h, w)}")
    if truth is None:
        rgb = _as_rgb(img)
        t = thickness if thickness is not None else max(1, round(max(h, w) / 256))
        rgb[outline(p, t)] = OUTLINE_COLOR
        return rgb
    tr = np.asarray(truth, dtype=bool)
    if tr.shape != (h, w):
        raise ValueError(f"truth shape {tr.shape} != image shape {(h, w)}")
    if img.ndim == 2:
        return _blend_gray(_as_gray(img), p, tr, tp_color, alpha)
    rgb = _as_rgb(img)
    _blend(rgb, p & tr, tp_color, alpha)
    _blend(rgb, p & ~tr, FP_COLOR, alpha)
    _blend(rgb, ~p & tr, FN_COLOR, alpha)
    return rgb


def save_overlay(
    path: str | os.PathLike[str], image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, **kwargs: Any
) -> Path:
    """Write :func:`overlay_rgb` as an RGB PNG (Pillow; no matplotlib)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(image, pred, truth, **kwargs)).save(path, format="PNG")
    return path
