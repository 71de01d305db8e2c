"""Volume metrics between a predicted and a true binary mask, in millimetres with anisotropic spacing.

``spacing`` is the voxel size along the arrays' axes, in their order.

* Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN) over voxels; mPA and mIoU
  with the study's two-class semantics over voxels (:func:`liverseg.core.metrics.scores`).
* Boundary voxels: ``mask & ~binary_erosion(mask)`` with face connectivity
  (``generate_binary_structure(ndim, 1)``, MONAI's ``get_mask_edges`` default) and
  voxels outside the array counted as background, so a mask touching the array's edge
  has a boundary there (as MONAI).
* Surface distances: from each boundary voxel of one mask to the nearest boundary voxel
  of the other (``distance_transform_edt`` with ``sampling=spacing``).
* HD95 = max of the two directed 95th percentiles (``np.percentile``, linear), as
  MONAI's ``compute_hausdorff_distance(percentile=95)``; ASSD = mean of both directions'
  distances together (MONAI ``compute_average_surface_distance(symmetric=True)``);
  NSD at tolerance t = (boundary voxels of each within t of the other) / (all boundary voxels).

Empty masks: both empty -> Dice 1, IoU 1, HD95 0, ASSD 0, NSD 1; exactly one empty ->
Dice 0, IoU 0, HD95 and ASSD None (undefined: there is no surface to measure to), NSD 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from liverseg.core.errors import DataError
from liverseg.core.metrics import scores

__all__ = ["check_spacing", "surface_distances", "volume_metrics", "volume_ml"]


def _ndimage() -> Any:
    try:
        from scipy import ndimage
    except ImportError:
        raise DataError("3D distance metrics need scipy: pip install 'liverseg[volumes]'") from None
    return ndimage


def check_spacing(spacing: Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    """``ndim`` finite positive floats, or ValueError naming the value."""
    vals = tuple(float(s) for s in spacing)
    if len(vals) != ndim or not all(math.isfinite(s) and s > 0 for s in vals):
        raise ValueError(f"spacing must be {ndim} finite positive numbers (mm), got {tuple(spacing)}")
    return vals


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred).astype(bool, copy=False), np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"prediction has shape {p.shape} but truth has {t.shape}")
    return p, t


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Mask voxels x voxel volume (mm^3) / 1000."""
    sp = check_spacing(spacing, np.ndim(mask))
    return float(np.count_nonzero(mask)) * float(np.prod(sp)) / 1000.0


def _border(mask: np.ndarray, nd: Any) -> np.ndarray:
    return mask & ~nd.binary_erosion(mask, structure=nd.generate_binary_structure(mask.ndim, 1), border_value=0)


def surface_distances(pred: Any, truth: Any, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(distances in mm from pred's boundary voxels to truth's boundary, and from truth's to pred's).

    Both masks are cropped to their union's bounding box plus one voxel first; the
    padding keeps the array edge's boundary voxels (erosion sees background outside).
    """
    p, t = _pair(pred, truth)
    sp = check_spacing(spacing, p.ndim)
    nd = _ndimage()
    union = p | t
    if not union.any():
        return np.zeros(0), np.zeros(0)
    idx = np.nonzero(union)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    pc = np.pad(p[box], 1)
    tc = np.pad(t[box], 1)
    bp, bt = _border(pc, nd), _border(tc, nd)
    if not bp.any() or not bt.any():
        return np.full(int(bp.sum()), np.inf), np.full(int(bt.sum()), np.inf)
    to_t = nd.distance_transform_edt(~bt, sampling=sp)
    to_p = nd.distance_transform_edt(~bp, sampling=sp)
    return to_t[bp], to_p[bt]


def volume_metrics(
    pred: Any, truth: Any, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float | int | None]:
    """Dice, IoU, mPA, mIoU, HD95, ASSD, NSD, both volumes and the confusion counts (rules in the module docstring)."""
    p, t = _pair(pred, truth)
    sp = check_spacing(spacing, p.ndim)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    s = scores(tp, fp, fn, tn)
    nsd_key = f"nsd_{tolerance_mm:g}mm"
    out: dict[str, float | int | None] = {
        "dice": float(s["dice"]),
        "iou": float(s["iou"]),
        "mPA": float(s["mPA"]),
        "mIoU": float(s["mIoU"]),
    }
    has_p, has_t = bool(tp + fp), bool(tp + fn)
    if not has_p and not has_t:
        out.update(dice=1.0, iou=1.0, hd95_mm=0.0, assd_mm=0.0)
        out[nsd_key] = 1.0
    elif not has_p or not has_t:
        out.update(dice=0.0, iou=0.0, hd95_mm=None, assd_mm=None)
        out[nsd_key] = 0.0
    else:
        d_pt, d_tp = surface_distances(p, t, sp)
        out["hd95_mm"] = float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
        out["assd_mm"] = float(np.concatenate([d_pt, d_tp]).mean())
        tol = tolerance_mm + 1e-6  # a distance of exactly the tolerance counts; the EDT's rounding must not decide
        within = int(np.count_nonzero(d_pt <= tol)) + int(np.count_nonzero(d_tp <= tol))
        out[nsd_key] = within / float(d_pt.size + d_tp.size)
    out["volume_ml"] = volume_ml(p, sp)
    out["volume_ml_true"] = volume_ml(t, sp)
    out.update(tp=tp, fp=fp, fn=fn, tn=tn)
    return out
