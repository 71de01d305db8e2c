"""Quality flags of a CT volume's liver mask: what a user should look at before trusting it.

Each input's row carries ``qc_flags`` (``per_volume.csv`` and ``per_image.csv``: the codes
separated by ``;``, empty when none was raised), ``summary.json`` counts them under ``qc``
and the terminal prints one line per flagged input. Flags never change the exit code.

Codes, their rules and where each threshold comes from:

* ``no_liver``: the mask is empty (the model found none, or the anatomy rule refused every
  region: :mod:`liverseg.core.anatomy`). Right for a neck or a pelvis; wrong for an abdomen.
* ``partial_fov``: the mask touches the first or last slice or the edge of the image: the
  liver is cut by the field of view, so its volume is not a whole liver's.
* ``implausible_volume``: a liver not cut by the field of view (no ``partial_fov``) outside
  :data:`ADULT_LIVER_ML` (600-4,000 mL, the adult range the quality-control issue set; the
  whole livers here measure 1,350 mL (CHAOS) and 1,861 mL (ircadb-17)).
* ``fragmented``: more than :data:`FRAGMENT_ML` of the model's mask lay outside the region
  that was kept (removed by the anatomy rule or ``--largest-component``): the model was
  unsure where the liver is. Not raised with ``no_liver``.
* ``wrong_side``: the centre of everything the model found (before any rule) lies more than
  :data:`WRONG_SIDE_MM` on the patient's left of the body's centre, and it is more than
  :data:`WRONG_SIDE_MIN_ML`: a mirrored input (an array flipped left-right), or situs
  inversus. It catches a model that follows the liver to the left; the shipped model,
  trained without left-right flips, finds the spleen on the right of a mirrored scan
  instead (ircadb-17 mirrored: 168 mL kept, so ``implausible_volume`` and ``fragmented``
  are raised, not ``wrong_side``).
* ``spacing_assumed``: the header's voxel size could not be trusted and was assumed
  (millilitres and millimetres rest on the assumption).
* ``intensity_assumed``: the stored values were not read as HU (``intensities read as ...``).

Not raised yet: ``unstable`` (disagreement with a test-time flip).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ADULT_LIVER_ML", "FLAGS", "FRAGMENT_ML", "STAT_COLUMNS", "liver_statistics", "volume_flags"]

ADULT_LIVER_ML = (600.0, 4000.0)
WRONG_SIDE_MM = 10.0
WRONG_SIDE_MIN_ML = 300.0
FRAGMENT_ML = 10.0
FLAGS = (
    "no_liver",
    "partial_fov",
    "implausible_volume",
    "fragmented",
    "wrong_side",
    "spacing_assumed",
    "intensity_assumed",
)


def _touches_border(mask: np.ndarray) -> bool:
    """True when ``mask`` [K, R, C] has a voxel on its first or last slice, row or column."""
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0, :].any()
        or mask[:, -1, :].any()
        or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )


def volume_flags(
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    removed_voxels: int,
    notes: list[str],
    left_mm: float | None = None,
) -> list[str]:
    """The codes of the module docstring raised for a cleaned mask [K, R, C] with (slice, row, col) ``spacing``.

    ``left_mm``: how far the model's own mask lies on the patient's left (:func:`liverseg.core.anatomy.on_the_left_mm`).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    flags: list[str] = []
    if not mask.any():
        flags.append("no_liver")
    elif _touches_border(mask):
        flags.append("partial_fov")
    else:
        ml = float(np.count_nonzero(mask)) * voxel_ml
        if not ADULT_LIVER_ML[0] <= ml <= ADULT_LIVER_ML[1]:
            flags.append("implausible_volume")
    if mask.any() and removed_voxels * voxel_ml > FRAGMENT_ML:  # with no liver left, no_liver says it all
        flags.append("fragmented")
    raw_ml = (float(np.count_nonzero(mask)) + removed_voxels) * voxel_ml
    if left_mm is not None and left_mm > WRONG_SIDE_MM and raw_ml > WRONG_SIDE_MIN_ML:
        flags.append("wrong_side")
    if any(n.startswith("assumed ") for n in notes):
        flags.append("spacing_assumed")
    if any(n.startswith("intensities read as") for n in notes):
        flags.append("intensity_assumed")
    return flags


# ---------------------------------------------------------------- statistics


STAT_COLUMNS = ("complete", "hu_mean", "hu_median", "hu_std", "extent_cc_mm", "bbox_ras_mm")


def liver_statistics(
    mask: np.ndarray,
    hu: np.ndarray | None,
    spacing: tuple[float, float, float],
    flags: list[str],
    vol: Any,
    offset: float = 0.0,
) -> dict[str, Any]:
    """The liver's statistics for ``per_volume.csv`` and ``statistics.json`` (docs/quality.md).

    ``mask`` [K, R, C] and ``hu`` (stored CT values, the same view, HU after subtracting
    ``offset``; None for a volume given as gray) are :meth:`Volume.axial` arrays of
    ``vol``. ``complete`` is False where the liver is cut by the field of view
    (``partial_fov``): its volume is the visible part only.
    The bounding box is in RAS+ millimetres (the NIfTI convention; DICOM's LPS flips x and y).
    """
    from liverseg.core.volume import axial_to_ras

    out: dict[str, Any] = dict.fromkeys(STAT_COLUMNS)
    if not mask.any():
        return out
    out["complete"] = "partial_fov" not in flags
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    rs = np.flatnonzero(mask.any(axis=(0, 2)))
    cs = np.flatnonzero(mask.any(axis=(0, 1)))
    out["extent_cc_mm"] = round(float(zs[-1] - zs[0] + 1) * spacing[0], 1)
    corners = axial_to_ras(vol, np.array([[zs[0], rs[0], cs[0]], [zs[-1], rs[-1], cs[-1]]]))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    out["bbox_ras_mm"] = " ".join(f"{v:.1f}" for v in (*lo, *hi))
    if hu is not None:
        values = np.concatenate([np.asarray(hu[z][mask[z]], dtype=np.float32) for z in zs]) - np.float32(offset)
        out.update(
            hu_mean=round(float(values.mean()), 2),
            hu_median=round(float(np.median(values)), 2),
            hu_std=round(float(values.std()), 2),
        )
    return out
