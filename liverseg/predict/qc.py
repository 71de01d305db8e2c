"""Quality flags of a CT volume's liver mask: what a user should look at before trusting it.

Each input's row carries ``qc_flags`` (``per_volume.csv`` and ``per_image.csv``: the codes
separated by ``;``, empty when none was raised), ``summary.json`` counts them under ``qc``
and the terminal prints one line per flagged input. Flags never change the exit code.

Codes, their rules and where each threshold comes from:

* ``no_liver``: the mask is empty (the model found none, or the anatomy rule refused every
  region: :mod:`liverseg.predict.anatomy`). Right for a neck or a pelvis; wrong for an abdomen.
* ``partial_fov``: the mask touches the first or last slice or the edge of the image: the
  liver is cut by the field of view, so its volume is not a whole liver's.
* ``implausible_volume``: a liver not cut by the field of view (no ``partial_fov``) outside
  :data:`ADULT_LIVER_ML` (600-4,000 mL, the adult range the quality-control issue set; the
  whole livers here measure 1,350 mL (CHAOS) and 1,861 mL (ircadb-17)).
* ``fragmented``: more than :data:`FRAGMENT_ML` of the model's mask lay outside the region
  that was kept (removed by the anatomy rule or ``--largest-component``): the model was
  unsure where the liver is. Not raised with ``no_liver``.
* ``wrong_side``: the input looks mirrored left-right (an array flipped by a reader, or
  situs inversus). Two signs, either raises it:

  - the **mirrored second look** (:func:`liverseg.predict.predictor.Predictor.second_looks`): on up to 8
    slices where the model found liver, run once more mirrored left-right, the model finds
    more than :data:`MIRRORED_RATIO` times the area it found as given, and at least
    :data:`MIRRORED_MIN_CM2` per slice. The reference model was trained without
    left-right flips, so on a correctly oriented scan mirroring loses most of the liver.
    Measured with the shipped model on the scans of ``../shared/data``: as given 0.30
    (CHAOS), 0.44 (ircadb-17), 0.49 (abdomen-pelvis), 0.37 (its top 30 slices) and 0.96 at
    17 cm² a slice (the neck, nothing there); mirrored 2.57, 2.13 and 2.74 at
    60-117 cm². A volume cropped tightly around the liver (``lits-117``) shows no
    side either way (0.54 and 0.48): the model has no body around it to tell sides by.
  - the centre of everything the model found (before any rule) lies more than
    :data:`WRONG_SIDE_MM` on the patient's left of the body's centre, and it is more than
    :data:`WRONG_SIDE_MIN_ML`: for a model that follows the liver to the left (one
    trained with left-right flips); the shipped one finds the spleen on the right of a
    mirrored scan instead.
* ``unstable``: the prediction disagrees with itself turned upside down (an augmentation
  the reference model was trained with, so a stable prediction barely changes): on the
  second look's slices that hold the kept liver (at least 2), the Dice between the mask
  and the upside-down mask, within the liver's in-plane bounding box grown by 10 mm, is
  under :data:`UNSTABLE_DICE`. Prediction disagreement is the strongest simple signal of
  a failed segmentation (Zenk et al., 2024). Measured: 0.958-0.987 on every scan here,
  mirrored ones included (0.926 on mirrored ``lits-117``); 0.90 leaves that margin. It
  says the model is unsure, not that it is wrong: a confidently wrong model (the spleen of
  a mirrored scan: 0.99) is caught by the other flags.
* ``spacing_assumed``: the header's voxel size could not be trusted and was assumed
  (millilitres and millimetres rest on the assumption).
* ``intensity_assumed``: the stored values were not read as HU (``intensities read as ...``).

``wrong_side`` (by its second look) and ``unstable`` need the model's second look, which
the runner and the API take for every volume with a mask (``--no-second-look`` /
``second_look=False`` skip it: those two signs are then not looked for). 2D inputs get
``window_estimated`` only (docs/quality.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liverseg.core.volume import axial_to_ras

__all__ = [
    "ADULT_LIVER_ML",
    "FLAGS",
    "FRAGMENT_ML",
    "SLICE_FLAGS",
    "STAT_COLUMNS",
    "flag_codes",
    "flip_agreement",
    "liver_statistics",
    "mirrored",
    "volume_flags",
]

ADULT_LIVER_ML = (600.0, 4000.0)
WRONG_SIDE_MM = 10.0
WRONG_SIDE_MIN_ML = 300.0
MIRRORED_RATIO = 1.5
MIRRORED_MIN_CM2 = 30.0
UNSTABLE_DICE = 0.90
UNSTABLE_MARGIN_MM = 10.0
FRAGMENT_ML = 10.0
FLAGS = (
    "no_liver",
    "partial_fov",
    "implausible_volume",
    "fragmented",
    "wrong_side",
    "unstable",
    "spacing_assumed",
    "intensity_assumed",
)
SLICE_FLAGS = ("window_estimated",)  # what a 2D input can raise (infer/rows.py)


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
    looks: Any = None,
) -> list[str]:
    """The codes of the module docstring raised for a cleaned mask [K, R, C] with (slice, row, col) ``spacing``.

    ``left_mm``: how far the model's own mask lies on the patient's left (:func:`.anatomy.on_the_left_mm`);
    ``looks``: the model's second look (:class:`liverseg.predict.predictor.SecondLooks`), or None.
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
    left = left_mm is not None and left_mm > WRONG_SIDE_MM and raw_ml > WRONG_SIDE_MIN_ML
    if left or (looks is not None and mirrored(looks.found_cm2, looks.mirrored_cm2)):
        flags.append("wrong_side")
    if looks is not None and mask.any():
        agreement = flip_agreement(mask, looks.slices, looks.upside_down, spacing)
        if agreement is not None and agreement < UNSTABLE_DICE:
            flags.append("unstable")
    if any(n.startswith("assumed ") for n in notes):
        flags.append("spacing_assumed")
    if any(n.startswith("intensities read as") for n in notes):
        flags.append("intensity_assumed")
    return flags


def flag_codes(cell: object) -> list[str]:
    """The codes of a row's ``qc_flags`` cell (``a;b``; empty, None or NaN: none)."""
    return [f for f in str(cell or "").split(";") if f]


def mirrored(found_cm2: float, mirrored_cm2: float) -> bool:
    """The mirrored second look's rule (module docstring, ``wrong_side``)."""
    return mirrored_cm2 >= MIRRORED_MIN_CM2 and mirrored_cm2 > MIRRORED_RATIO * found_cm2


def flip_agreement(
    mask: np.ndarray, slices: np.ndarray, upside_down: np.ndarray, spacing: tuple[float, float, float]
) -> float | None:
    """The Dice of ``mask`` [K, R, C] with the upside-down masks [n, R, C] of ``slices``, on those slices that hold
    the mask and within its in-plane bounding box grown by :data:`UNSTABLE_MARGIN_MM`; None under 2 such slices."""
    inside = np.array([bool(mask[k].any()) for k in slices], dtype=bool)
    if inside.sum() < 2:
        return None
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    gr = int(round(UNSTABLE_MARGIN_MM / spacing[1]))
    gc = int(round(UNSTABLE_MARGIN_MM / spacing[2]))
    box = (slice(max(0, rows[0] - gr), rows[-1] + gr + 1), slice(max(0, cols[0] - gc), cols[-1] + gc + 1))
    a = np.asarray(mask[slices[inside]], dtype=bool)[:, box[0], box[1]]
    b = upside_down[inside][:, box[0], box[1]]
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2.0 * np.count_nonzero(a & b) / total if total else 1.0


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
