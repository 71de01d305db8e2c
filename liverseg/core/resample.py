"""In-plane resampling of slices to a model's pixel spacing, and back.

A model records the pixel size it was trained at (``ct.pixel_spacing_mm`` in its
contract). A slice of another pixel size is resized so that one pixel covers the same
millimetres as in training; the probability map is resized back to the slice's own
grid and thresholded there, so masks always have the input's shape.

Both directions use Pillow's bilinear filter (``Image.resize``), which widens its
support when shrinking (an antialiased reduction, like ``skimage.transform.rescale``
with ``anti_aliasing``) and is plain bilinear when enlarging. The same function
serves 2D slices and volume slices, so a DICOM slice and its PNG give the same model
input. Sizes are rounded to whole pixels; :func:`target_shape` says how.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["RESAMPLE_TOLERANCE", "resize_gray", "resize_mask", "resize_probability", "target_shape"]

RESAMPLE_TOLERANCE = 0.02  # spacings within 2% of the model's are used as they are


def target_shape(shape: tuple[int, int], spacing: tuple[float, float], model_spacing: float | None) -> tuple[int, int]:
    """(rows, columns) of a ``shape`` slice with ``spacing`` (row, column mm) at ``model_spacing`` mm.

    Unchanged without a model spacing, or when both spacings are within
    :data:`RESAMPLE_TOLERANCE` of it.
    """
    if model_spacing is None:
        return shape
    if all(abs(s / model_spacing - 1.0) <= RESAMPLE_TOLERANCE for s in spacing):
        return shape
    return (
        max(1, int(round(shape[0] * spacing[0] / model_spacing))),
        max(1, int(round(shape[1] * spacing[1] / model_spacing))),
    )


def resize_gray(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] -> uint8 ``shape`` (bilinear, antialiased when shrinking)."""
    if tuple(img.shape) == tuple(shape):
        return img
    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def resize_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] -> float32 ``shape`` (bilinear)."""
    if tuple(prob.shape) == tuple(shape):
        return prob
    im = Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 0/1 [H, W] -> uint8 0/1 ``shape`` (nearest neighbour; when no probability map came back)."""
    if tuple(mask.shape) == tuple(shape):
        return mask
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.NEAREST), dtype=np.uint8)
