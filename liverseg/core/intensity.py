"""How stored pixel values become the model's 8-bit gray input.

The models see gray 0..255. The PNG sets of this project (and the study's) store CT
numbers clipped to [0, 255] (HU 0 -> gray 0, HU 255 -> gray 255); a model's contract
says which HU window it was trained on (``ct.window_hu``, default [0, 255]), and
every CT input is windowed by it: ``gray = clip((HU - low) * 255 / (high - low), 0, 255)``,
rounded. For the default window and integer HU this is exactly the PNG sets' rule, so
a DICOM slice and its PNG give the same input.

What the stored values are (``intensity``):

* ``gray``: 8-bit gray as stored; 16-bit gray scaled by 1/257 to 0..255.
* ``hu``: signed CT numbers in Hounsfield units.
* ``hu+1024``: CT numbers stored with an offset of 1024 (unsigned 12-bit CT, the usual
  16-bit TIFF/PNG export: air 0, water 1024).
* ``auto`` (the default) decides per image by this stated rule:

  - 8-bit images are ``gray``;
  - signed integer or float data with a value below -200 (air is about -1000 HU) is ``hu``;
  - unsigned 16-bit data whose maximum is at most 4095 (the 12-bit range CT scanners
    store) is ``hu+1024``; 16-bit data above 4095 is ``gray`` (a genuine 16-bit image);
  - float or signed integer data without air cannot be interpreted: refused with the
    reason, rather than given empty masks (a signed volume with no value below -200 is
    far more often MR, whose NIfTI files carry no modality, than CT stored with an offset).

A CT image whose every pixel falls outside the window (all black or all white after
windowing) is refused too: its numbers are not what the rule assumed.
"""

from __future__ import annotations

import numpy as np

from liverseg.core.errors import DataError

__all__ = ["AIR_BELOW_HU", "INTENSITY_MODES", "MAX_STORED_CT", "interpret", "restretch", "window_to_gray"]

INTENSITY_MODES = ("auto", "gray", "hu", "hu+1024")
AIR_BELOW_HU = -200.0  # a CT image in HU holds air (about -1000) somewhere; nothing else goes this low
MAX_STORED_CT = 4095  # 12-bit CT stored values: HU + 1024 from -1024 to 3071


def interpret(arr: np.ndarray, mode: str, source: str) -> str:
    """What ``arr``'s values are (``gray``, ``hu`` or ``hu+1024``) under ``mode`` (rule in the module docstring)."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if arr.dtype == np.uint8:
        return "gray"
    lo = float(arr.min()) if arr.size else 0.0
    hi = float(arr.max()) if arr.size else 0.0
    if lo < AIR_BELOW_HU and (arr.dtype.kind in "if"):
        return "hu"
    if arr.dtype.kind == "u":
        return "hu+1024" if hi <= MAX_STORED_CT else "gray"
    raise DataError(
        f"{source}: cannot tell what its values are ({arr.dtype}, range {lo:g} .. {hi:g}); they do not look like "
        f"CT numbers: not 8-bit gray, no air below {AIR_BELOW_HU:g} HU, and not unsigned 12-bit stored CT "
        "(an MR scan or a mask?); pass --intensity gray, hu or hu+1024 if you know what they are"
    )


def window_to_gray(
    arr: np.ndarray, kind: str, window: tuple[float, float], source: str, out: np.ndarray | None = None
) -> np.ndarray:
    """uint8 gray of ``arr`` whose values are ``kind`` (see :func:`interpret`), windowed by ``window`` (HU).

    ``out`` (uint8, ``arr``'s shape) is filled in place when given, so a volume is
    converted slice by slice without a float copy of the whole of it.
    """
    if kind == "gray":
        if arr.dtype == np.uint8:
            gray = arr
        elif arr.dtype.kind in "ui" and int(arr.max(initial=0)) <= 65535 and int(arr.min(initial=0)) >= 0:
            gray = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        else:
            raise DataError(f"{source}: {arr.dtype} values cannot be read as gray (expected 8- or 16-bit)")
        if out is None:
            return gray
        out[...] = gray
        return out
    lo, hi = window
    offset = 1024.0 if kind == "hu+1024" else 0.0
    scale = 255.0 / (hi - lo)
    hu = arr.astype(np.float32) - np.float32(offset + lo)
    hu *= np.float32(scale)
    np.clip(hu, 0.0, 255.0, out=hu)
    np.rint(hu, out=hu)
    if out is None:
        out = np.empty(arr.shape, dtype=np.uint8)
    out[...] = hu
    return out


def check_windowed(gray: np.ndarray, arr: np.ndarray, kind: str, window: tuple[float, float], source: str) -> None:
    """Refuse CT data that the window turned into one flat value (the numbers were not what was assumed)."""
    if kind == "gray" or gray.size == 0:
        return
    g0 = int(gray.flat[0])
    # slice by slice: the first slice that holds another value ends the check (one pass over a 300-slice
    # volume at once cost 0.5 s, for a temporary as large as the volume)
    if g0 in (0, 255) and not any(np.any(s != g0) for s in (gray if gray.ndim == 3 else (gray,))):
        offset = 1024.0 if kind == "hu+1024" else 0.0
        lo_hu, hi_hu = float(arr.min()) - offset, float(arr.max()) - offset
        side = "below" if g0 == 0 else "above"
        raise DataError(
            f"{source}: read as {kind} its CT numbers span {lo_hu:g} .. {hi_hu:g} HU, all {side} the model's "
            f"window [{window[0]:g}, {window[1]:g}] HU, so the model would see a blank image; check --intensity "
            "or --window"
        )


# ---------------------------------------------------------------- 8-bit slices exported in a wide window

MIN_GAP = 21  # gray levels between the air/lung class and the bottom of the tissue class
MAX_TISSUE_IQR = 33  # gray levels: the tissue's middle half squeezed into this few
BACKGROUND_GRAY = 80  # what the air becomes (a gray background, as percentile-normalised exports have)
WINDOW_ESTIMATED = "8-bit window estimated from the histogram"  # the note's start (and the qc flag's reason)


def _otsu(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values``: the gray level that best splits them into two classes."""
    h = np.bincount(values, minlength=256).astype(np.float64)
    p = h / h.sum()
    w = np.cumsum(p)
    m = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m[-1] * w - m) ** 2 / (w * (1.0 - w))
    return int(np.argmax(np.nan_to_num(between[:-1], nan=-1.0)))  # one value only: 0


def restretch(gray: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An 8-bit slice exported in a wide window (or z-scored), stretched to what the model knows; else unchanged.

    The models learned CT in the PNG sets' window (HU 0..255: air and fat black, soft
    tissue 40-200). A slice exported with a wide window (about -1000..760 HU) or z-scored
    keeps fat and soft tissue in a narrow band far above the air: the model, which
    z-scores each image, then sees almost no contrast (ircadb-17 pooled Dice 0.48 in such
    windows). The window is told from the histogram: the pixels other than the most
    common value (the background) are split in two by Otsu's threshold (air and lung
    below, tissue above); a wide window leaves a gap of at least :data:`MIN_GAP` gray
    levels between that threshold and the tissue's 5th percentile (the fat), with the
    tissue's middle half within :data:`MAX_TISSUE_IQR` levels. Such a slice has its
    tissue's 0.5..99.5 percentiles stretched to 0..255 and the rest set to a gray
    background, like the percentile-normalised slices of the training set.

    Measured (gray levels): the gap is 36-48 for ircadb-17 in a -1000..760 window and
    22-30 z-scored, 2-18 on every one of the 701 slices of msd-liver-256 and
    chaos-ct-case and 2-8 for ircadb-17 in the HU 0..255 window, which are never
    stretched.
    """
    if gray.dtype != np.uint8 or gray.size < 100:
        return gray, None
    h = np.bincount(gray.ravel(), minlength=256)
    rest = gray[gray != int(h.argmax())]
    if rest.size < 100:
        return gray, None
    t = _otsu(rest)
    tissue = rest[rest > t]
    if tissue.size < 100 or np.count_nonzero(np.bincount(tissue, minlength=256)) < 8:  # a phantom, not a slice
        return gray, None
    p5, p25, p75 = np.percentile(tissue, [5, 25, 75])
    if p5 - t < MIN_GAP or p75 - p25 > MAX_TISSUE_IQR:
        return gray, None
    body = gray > t
    lo, hi = np.percentile(gray[body], [0.5, 99.5])
    out = np.clip((gray.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / max(hi - lo, 1.0)), 0, 255)
    out[~body] = BACKGROUND_GRAY
    note = (
        f"{WINDOW_ESTIMATED}: tissue in {int(p5)}..{int(np.percentile(tissue, 95))} "
        f"above air below {t} (a wide window); stretched to 0..255 for the model"
    )
    return np.rint(out).astype(np.uint8), note
