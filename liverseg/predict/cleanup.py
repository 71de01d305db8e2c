"""Post-processing of predicted masks: keep the largest connected component, drop small blobs.

The liver is one connected organ. :func:`largest_component` keeps only the largest
connected region of a mask (3D for volumes, 2D for slices; face connectivity, i.e.
``scipy.ndimage.generate_binary_structure(ndim, 1)``); :func:`remove_small` drops every
region smaller than a size in voxels. Both return the cleaned mask and how many
voxels they removed, which the run records. They need scipy (the ``volumes`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liverseg.core.errors import DataError

__all__ = ["largest_component", "remove_small"]


def _ndimage() -> Any:
    try:
        from scipy import ndimage
    except ImportError:
        raise DataError("connected-component cleanup needs scipy: pip install 'liverseg[volumes]'") from None
    return ndimage


def _label(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nd = _ndimage()
    labels, n = nd.label(mask, structure=nd.generate_binary_structure(mask.ndim, 1))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels, sizes


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask with only its largest connected region, voxels removed); an empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask, 0
    labels, sizes = _label(mask)
    keep = labels == int(np.argmax(sizes))
    return keep, int(mask.sum() - keep.sum())


def remove_small(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """(mask without the connected regions smaller than ``min_voxels``, voxels removed)."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask, 0
    labels, sizes = _label(mask)
    small = sizes < min_voxels
    small[0] = False
    if not small.any():
        return mask, 0
    keep = mask & ~small[labels]
    return keep, int(mask.sum() - keep.sum())
