"""Inputs that are not CT: refused with the reason, before the model makes a mask of them.

A model trained on CT makes a mask of anything it is given: a liver label map ran with
exit 0 and an empty mask, a web-page screenshot came out 81% "liver". liverseg-infer and
the Python API refuse, per input (the batch goes on; the exit code is 1), with one line
naming the file and the reason:

* **colour images** (:func:`colour_problem`): an RGB image whose channels differ by more
  than :data:`COLOUR_DELTA` gray levels on more than :data:`COLOUR_SHARE` of its pixels
  (a screenshot, a photo). Gray stored as RGB (R = G = B, the study's PNGs), JPEG's chroma
  noise included, passes.
* **label maps and masks** (:func:`label_map_problem`): an image or volume holding between
  2 and :data:`MAX_LABEL_VALUES` distinct values. A CT slice holds hundreds (a slice in
  the PNG sets' HU 0..255 window: fat and air at 0, soft tissue 40-200); a blank slice
  (one value) is not refused: it is a slice without contrast, which gets no liver.
* **MR-like intensities** (:func:`ct_numbers_problem`): data read as CT numbers (HU, or
  HU + 1024) whose tissue does not sit where CT's does. In CT most voxels above -900 HU
  (everything but air) are fat, water, soft tissue or bone: at least
  :data:`MIN_TISSUE_SHARE` of them lie in -200..300 HU (measured on every 16th slice:
  ircadb-17 0.87, totalseg-example 0.91, lits-117 0.90, the head-and-neck CT 0.85, the
  CHAOS series 0.69, its upper slices full of lung). An MR volume in unsigned 16-bit,
  whose numbers the intensity rule reads as HU + 1024, puts most of its tissue below
  -200 HU. A series whose header says CT is not asked this.

``--allow-non-ct`` (``liverseg-infer``) and ``allow_non_ct=True`` (the API) accept such
inputs anyway: a synthetic phantom, an image known to be right.
"""

from __future__ import annotations

import numpy as np

from liverseg.core.errors import DataError

__all__ = [
    "ALLOW_HINT",
    "check_ct",
    "colour_problem",
    "ct_numbers_problem",
    "label_map_problem",
]

COLOUR_DELTA = 24  # gray levels between channels; JPEG's chroma noise on a gray image stays under it
COLOUR_SHARE = 0.01
MAX_LABEL_VALUES = 8
MIN_TISSUE_SHARE = 0.5
ALLOW_HINT = "pass --allow-non-ct (the API: allow_non_ct=True) if it is a CT image all the same"


def colour_problem(rgb: np.ndarray) -> str | None:
    """Why an [H, W, 3+] image is a colour image rather than gray CT, or None."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return None
    px = rgb[::2, ::2, :3].astype(np.int16)
    delta = np.maximum(np.abs(px[..., 0] - px[..., 1]), np.abs(px[..., 1] - px[..., 2]))
    share = float(np.count_nonzero(delta > COLOUR_DELTA)) / max(delta.size, 1)
    if share > COLOUR_SHARE:
        return f"a colour image ({100 * share:.1f}% of its pixels are coloured), not a gray CT slice (a screenshot?)"
    return None


def label_map_problem(arr: np.ndarray) -> str | None:
    """Why ``arr`` (an image, or a sample of a volume's slices) is a label map or mask, or None."""
    if arr.size == 0:
        return None
    if arr.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        values = np.unique(arr)
    if 2 <= values.size <= MAX_LABEL_VALUES:
        shown = ", ".join(f"{v:g}" for v in values.astype(np.float64)[:MAX_LABEL_VALUES])
        return f"holds only {values.size} distinct values ({shown}): a label map or mask, not a CT image"
    return None


def ct_numbers_problem(hu: np.ndarray) -> str | None:
    """Why CT numbers ``hu`` (a sample, in HU) do not look like CT, or None."""
    tissue = hu[hu > -900]
    if tissue.size < 100:
        return None  # all air: the window check says what is wrong, if anything
    share = float(np.count_nonzero((tissue >= -200) & (tissue <= 300))) / tissue.size
    if share < MIN_TISSUE_SHARE:
        return (
            f"read as CT numbers, only {100 * share:.0f}% of its non-air voxels lie in -200..300 HU (fat, water, "
            f"soft tissue; CT: about 85%): MR or other data, not CT"
        )
    return None


def check_ct(arr: np.ndarray, kind: str, source: str, modality_known: bool = False) -> None:
    """Raise DataError naming ``source`` when ``arr`` (stored values read as ``kind``) is not CT.

    ``modality_known``: the header says CT (a DICOM series), so the numbers are not questioned.
    """
    why = label_map_problem(arr)
    if why is None and kind in ("hu", "hu+1024") and not modality_known:
        hu = arr.astype(np.float32) - (1024.0 if kind == "hu+1024" else 0.0)
        why = ct_numbers_problem(hu)
    if why is not None:
        raise DataError(f"{source}: {why}; {ALLOW_HINT}")
