"""Where a liver can be in a CT volume: the lungs and the body's midline, and the mask's plausible part.

A 2D network sees one slice at a time and cannot tell a neck from an abdomen: on a
head-and-neck CT the reference model once found 200 mL of "liver" in the neck muscles and
shoulders, on an abdomen-pelvis CT blobs in the pelvis. For CT volumes, liverseg keeps
only the part of the mask that sits where a liver can (on by default; ``--no-anatomy``
turns it off):

1. :func:`landmarks` reads the HU voxels once, before they are freed, on a grid of about
   6 mm: the **lungs** are the air (below -400 HU) inside the body -- not connected to the
   image border -- in connected regions of at least :data:`MIN_LUNG_ML`, of which at most
   :data:`MAX_GAS_FRACTION` is below -950 HU (lung tissue is about -850 HU; gas in the
   bowel and the airway is about -1000 HU, so the colon is not taken for a lung); and,
   per slice, the column of the **body's centre** (voxels above -500 HU).
2. :func:`plausible_liver` splits the mask into connected regions (face connectivity, on
   blocks of about 3 mm in-plane so that it costs tens of milliseconds for a 512x512x300
   series) and keeps the **largest region that passes every rule**:

   - not above the lungs: its centre lies below (caudal to) the lungs' centre, and on the
     slice of its centre the lungs cover at most :data:`MAX_LUNG_SHARE` of their largest
     cross-section (the liver lies under the right lung's base; the heart, between the
     lungs, and the neck and shoulders, above them, do not);
   - on the patient's right: its centre lies at most :data:`MIDLINE_TOLERANCE_MM` to the
     left of the body's centre (situs inversus, about 1 in 10,000 people, is refused);
   - at least :data:`MIN_LIVER_ML`.

   Without lungs in the field of view (a scan of the abdomen below them, or a volume given
   as gray) the lung rules do not apply. If no region passes, the mask is empty: "no liver
   in this scan" is an answer, and the note says why each region was refused.
3. :func:`trim_caudal_tail` removes the slices at the kept region's inferior end whose
   CT numbers are not the liver's (where the model ran on from the liver's tip into the
   bowel below it): the liver is homogeneous, bowel is not.
4. :func:`solid_liver` uses the third dimension once more: the 2D network's masks flicker
   from slice to slice (a slice near the dome misses what its neighbours find), and the
   liver is one solid organ. The kept region is closed in 3D by about :data:`CLOSE_MM`
   (iterations of the face-neighbour cross, as many as slices fit in it) and the holes it
   encloses are filled. Measured on the three scans here with expert labels (3D Dice / HD95,
   before -> after, ``MODEL_CARD.md``): ircadb-17 0.943 / 13.4 mm -> 0.950 / 9.6 mm, the CHAOS
   series 0.962 / 6.5 -> 0.964 / 4.5, LiTS 117 0.87 / 16 -> 0.91 / 9.0.

The rules are measured on the volumes of ``../shared/data`` (``MODEL_CARD.md``); they
need scipy (the ``volumes`` extra).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from liverseg.predict.cleanup import _ndimage

__all__ = [
    "WRONG_SIDE",
    "on_the_left_mm",
    "MAX_LUNG_SHARE",
    "MIN_LIVER_ML",
    "Landmarks",
    "landmarks",
    "plausible_liver",
    "solid_liver",
]

AIR_HU = -400.0  # air and lung below this
GAS_HU = -950.0  # gas (bowel, airway, outside) below this; lung tissue mostly above
BODY_HU = -500.0
LANDMARK_GRID_MM = 6.0
BLOCK_MM = 3.0
MIN_LUNG_ML = 20.0
MAX_GAS_FRACTION = 0.4
MAX_LUNG_SHARE = 0.5
MIDLINE_TOLERANCE_MM = 10.0
MIN_LIVER_ML = 20.0
CLOSE_MM = 6.0  # solid_liver: gaps and notches up to about twice this are filled
WRONG_SIDE = "on the patient's left"


@dataclass(frozen=True)
class Landmarks:
    """What the HU voxels said about the body, per axial slice of the model's view (inferior -> superior)."""

    lung_mm2: np.ndarray  # float [K]: lung cross-section per slice
    body_col: np.ndarray  # float [K]: column (input grid) of the body's centre; NaN where no body

    @property
    def has_lungs(self) -> bool:
        return bool(self.lung_mm2.max(initial=0.0) > 0)

    @property
    def lung_centre(self) -> float:
        """The lungs' centre as a (fractional) slice index."""
        w = self.lung_mm2
        return float((np.arange(w.size) * w).sum() / w.sum())


def landmarks(hu: np.ndarray, spacing: tuple[float, float, float], offset: float = 0.0) -> Landmarks:
    """Lungs and body centre of an axial CT volume [K, R, C] with (slice, row, col) ``spacing`` mm.

    ``hu - offset`` are the CT numbers (``offset`` 1024 for values stored as HU + 1024).
    """
    nd = _ndimage()
    k, r, c = hu.shape
    sr = max(1, int(round(LANDMARK_GRID_MM / spacing[1])))
    sc = max(1, int(round(LANDMARK_GRID_MM / spacing[2])))
    sub = np.asarray(hu[:, ::sr, ::sc], dtype=np.float32)
    if offset:
        sub -= np.float32(offset)
    air = sub < AIR_HU
    labels, n = nd.label(air, structure=nd.generate_binary_structure(3, 1))
    lung_mm2 = np.zeros(k, dtype=np.float64)
    if n:
        edge = np.unique(
            np.concatenate(
                [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
            )
        )
        index = np.arange(1, n + 1)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        gas = nd.sum_labels(sub < GAS_HU, labels, index=index) / np.maximum(sizes, 1)
        voxel_ml = spacing[0] * spacing[1] * sr * spacing[2] * sc / 1000.0
        lung = (sizes * voxel_ml >= MIN_LUNG_ML) & (gas <= MAX_GAS_FRACTION)
        lung[edge[edge > 0] - 1] = False
        if lung.any():
            is_lung = np.concatenate([[False], lung])[labels]
            lung_mm2 = is_lung.sum(axis=(1, 2)) * (spacing[1] * sr * spacing[2] * sc)
    body = sub > BODY_HU
    counts = body.sum(axis=(1, 2))
    cols = (body.sum(axis=1) * np.arange(body.shape[2])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        body_col = np.where(counts > 0, cols / counts * sc, np.nan)
    return Landmarks(lung_mm2, body_col)


def _block_counts(mask: np.ndarray, br: int, bc: int) -> np.ndarray:
    """Voxels of ``mask`` [K, R, C] in each br x bc in-plane block (padded at the far edges)."""
    k, r, c = mask.shape
    pr, pc = -r % br, -c % bc
    if pr or pc:
        mask = np.pad(mask, ((0, 0), (0, pr), (0, pc)))
    u = mask.view(np.uint8).reshape(k * ((r + pr) // br), br, c + pc)
    # one add per row and column of a block: 0.05 s for 300x512x512, where sum(axis=(2, 4)) took 1.3 s
    rows = u[:, 0].astype(np.uint8 if br * bc < 256 else np.uint16)
    for i in range(1, br):
        np.add(rows, u[:, i], out=rows)
    blocks = rows.reshape(k * ((r + pr) // br), (c + pc) // bc, bc)
    out = blocks[:, :, 0].copy()
    for j in range(1, bc):
        np.add(out, blocks[:, :, j], out=out)
    return out.reshape(k, (r + pr) // br, (c + pc) // bc)


def plausible_liver(
    mask: np.ndarray, spacing: tuple[float, float, float], marks: Landmarks | None, in_place: bool = False
) -> tuple[np.ndarray, int, str | None]:
    """(the mask's largest plausible region, voxels removed, a note or None): rules in the module docstring.

    ``in_place``: the refused regions are cleared in ``mask`` itself (a bool array) instead of a copy: 0.15 s and
    the memory of a 512x512x300 mask saved where the caller has no other use for the model's mask.
    """
    mask = np.asarray(mask, dtype=bool)
    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    if occupied.size == 0:
        return mask, 0, None
    nd = _ndimage()
    k, r, c = mask.shape
    z0 = int(occupied[0])
    part = mask[z0 : int(occupied[-1]) + 1]  # the slices that hold the mask
    br = max(1, int(round(BLOCK_MM / spacing[1])))
    bc = max(1, int(round(BLOCK_MM / spacing[2])))
    counts = _block_counts(part, br, bc)
    labels, n = nd.label(counts > 0, structure=nd.generate_binary_structure(3, 1))
    _, rb, cb = labels.shape
    on = np.flatnonzero(labels)  # the statistics over occupied blocks only
    lab, w = labels.ravel()[on], counts.ravel()[on].astype(np.float64)
    voxels = np.bincount(lab, weights=w, minlength=n + 1)
    zsum = np.bincount(lab, weights=w * (on // (rb * cb) + z0), minlength=n + 1)
    csum = np.bincount(lab, weights=w * ((on % cb + 0.5) * bc - 0.5), minlength=n + 1)  # block centre columns
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    refused: list[str] = []
    keep = 0
    for i in sorted(range(1, n + 1), key=lambda j: -voxels[j]):
        ml = voxels[i] * voxel_ml
        why = _refusal(ml, zsum[i] / voxels[i], csum[i] / voxels[i], spacing, marks)
        if why is None:
            keep = i
            break
        refused.append(f"{ml:.0f} mL {why}")
    if keep == 0:
        return (
            np.zeros_like(mask),
            int(voxels.sum()),
            f"no liver: no region of the mask is where a liver can be ({'; '.join(refused[:3])})",
        )
    drop = (labels != keep) & (labels > 0)
    dropped = np.flatnonzero(drop.any(axis=(1, 2)))
    out = mask.copy() if dropped.size and not in_place else mask
    removed = 0
    for z in dropped:
        full = np.repeat(np.repeat(drop[z], br, axis=0), bc, axis=1)[:r, :c]
        removed += int(np.count_nonzero(out[z0 + z] & full))
        out[z0 + z] &= ~full
    note = None
    if refused:
        note = "anatomy: kept the largest region where a liver can be; refused " + "; ".join(refused[:3])
    return out, removed, note


def _refusal(
    ml: float, zc: float, cc: float, spacing: tuple[float, float, float], marks: Landmarks | None
) -> str | None:
    """Why a region of ``ml`` mL centred at slice ``zc``, column ``cc`` cannot be a liver, or None."""
    if ml < MIN_LIVER_ML:
        return f"under {MIN_LIVER_ML:g} mL"
    if marks is None:
        return None
    z = int(round(min(max(zc, 0), marks.lung_mm2.size - 1)))
    if marks.has_lungs:
        if zc > marks.lung_centre:
            return "above the lungs' centre"
        if marks.lung_mm2[z] > MAX_LUNG_SHARE * marks.lung_mm2.max():
            return "between the lungs"
    centre = marks.body_col[z]
    if np.isfinite(centre) and (cc - centre) * spacing[2] > MIDLINE_TOLERANCE_MM:
        return WRONG_SIDE
    return None


def on_the_left_mm(mask: np.ndarray, marks: Landmarks | None, spacing: tuple[float, float, float]) -> float | None:
    """How far (mm) the centre of everything in ``mask`` lies on the patient's left of the body's centre, or None.

    Computed on the model's own mask, before any rule: a mirrored input puts the bulk of
    what the model calls liver on the left, whichever region a rule then keeps.
    """
    if marks is None or not mask.any():
        return None
    k, r, c = mask.shape
    # one pass of 32-bit adds over rows (a uint32 column sum holds 2**32 > any slice count x rows): 3x faster
    # than mask.sum(axis=(0, 1)) over a 512x512x300 mask
    cols = np.add.reduce(mask.view(np.uint8).reshape(k * r, c), axis=0, dtype=np.uint32).astype(np.float64)
    centre_col = float((cols * np.arange(cols.size)).sum() / cols.sum())
    body = marks.body_col[mask.any(axis=(1, 2))]
    body = body[np.isfinite(body)]
    if body.size == 0:
        return None
    return (centre_col - float(np.median(body))) * spacing[2]


TAIL_BAND_HU = 20.0  # a voxel is liver-like within this many HU of the liver's median
TAIL_SHARE = 0.5  # a slice is not liver-like below this share of the liver's typical slice


def trim_caudal_tail(mask: np.ndarray, gray: np.ndarray, band: float) -> tuple[np.ndarray, int]:
    """(``mask`` without the slices at its inferior end that are not liver-like, voxels removed).

    The liver is one homogeneous organ: on a CT most of its voxels lie within
    :data:`TAIL_BAND_HU` of its median. Where a 2D model runs on from the liver's
    inferior tip into the bowel below it (the abdomen-pelvis CT of ``../shared/data``:
    30 slices, 9 cm, connected to the liver), those slices hold few such voxels. In the
    lower half of the mask's slices, a slice whose share of liver-like voxels is under
    :data:`TAIL_SHARE` of the median slice's share is unlike; the mask is cut below the
    slice that best separates unlike slices below from like ones above (the fewest like
    slices removed plus unlike ones kept). ``gray`` is the windowed scan [K, R, C]
    (uint8), ``band`` the HU band in its gray levels.
    """
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size < 10:  # too few slices to tell a tail from the organ
        return mask, 0
    core = float(np.median(gray[mask]))
    share = np.array([float(np.mean(np.abs(gray[z][mask[z]].astype(np.float32) - core) <= band)) for z in zs])
    low = share[: zs.size // 2] < TAIL_SHARE * float(np.median(share))  # the lower half's unlike slices
    # the cut that best separates unlike slices below it from like slices above it (a change point):
    # like slices removed + unlike slices kept, smallest cut on a tie
    cost = np.array([np.count_nonzero(~low[:c]) + np.count_nonzero(low[c:]) for c in range(low.size + 1)])
    cut = int(np.argmin(cost))
    if cut == 0:
        return mask, 0
    out = mask.copy()
    removed = int(out[zs[0] : zs[cut - 1] + 1].sum())
    out[zs[0] : zs[cut - 1] + 1] = False
    return out, removed


def solid_liver(mask: np.ndarray, spacing: tuple[float, float, float], close_mm: float = CLOSE_MM) -> int:
    """Close the bool ``mask`` [K, R, C] in 3D and fill the holes it encloses, in place; the voxels added.

    ``round(close_mm / slice spacing)`` iterations (at least one) of a closing with the
    face-neighbour cross, then the enclosed holes filled (what :func:`scipy.ndimage.binary_fill_holes` gives);
    both on the mask's bounding box grown by the closing's reach, so the cost follows the liver, not the scan.
    """
    if not mask.any():
        return 0
    nd = _ndimage()
    n = max(1, int(round(close_mm / spacing[0])))
    pad = n + 1
    box = []
    for axes, size in (((1, 2), mask.shape[0]), ((0, 2), mask.shape[1]), ((0, 1), mask.shape[2])):
        on = np.flatnonzero(mask.any(axis=axes))
        box.append(slice(max(0, int(on[0]) - pad), min(size, int(on[-1]) + pad + 1)))
    part = mask[tuple(box)]
    cross = nd.generate_binary_structure(3, 1)
    grown = np.pad(part, pad)  # room for the dilation beyond the scan's edge, as if the mask went on
    closed = _closing(grown, cross, n)[pad:-pad, pad:-pad, pad:-pad] | part
    # the holes: background regions that do not reach the box's faces (binary_fill_holes' answer, in one
    # labelling pass instead of its dilation to convergence: 0.14 s against 0.45 s on ircadb-17)
    labels, _ = nd.label(~closed, structure=cross)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    outside = np.zeros(int(labels.max()) + 1, dtype=bool)
    outside[np.unique(np.concatenate([f.ravel() for f in faces]))] = True
    outside[0] = True  # label 0 is the closed mask itself
    before = int(np.count_nonzero(part))
    part[...] = closed | ~outside[labels]
    return int(np.count_nonzero(part)) - before


def _closing(mask: np.ndarray, cross: np.ndarray, n: int) -> np.ndarray:
    """``binary_closing(mask, cross, n)``, its two halves along the first axis in two threads (scipy releases the
    GIL: 0.55 -> 0.3 s for a 300-slice series' liver). Each half reaches 2 ``n`` slices into the other, as far as
    a closing's answer depends on its input, and keeps only its own slices: the result is the same."""
    nd = _ndimage()
    k, reach = mask.shape[0], 2 * n
    if k < 4 * reach + 16:
        return nd.binary_closing(mask, structure=cross, iterations=n)
    mid = k // 2
    with ThreadPoolExecutor(2, thread_name_prefix="liverseg-closing") as pool:
        low, high = pool.map(
            lambda part: nd.binary_closing(mask[part], structure=cross, iterations=n),
            (slice(0, mid + reach), slice(mid - reach, k)),
        )
    return np.concatenate([low[:mid], high[reach:]])
