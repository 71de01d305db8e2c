"""Training slices from whole CT volumes in HU: liver and no-liver slices, under several windows.

``python -m liverseg.trainer.slices --data ../shared/data --out WORK/volume-slices``

The slices of ``msd-liver-256`` all hold liver and all come in one window (HU 0..255 as
gray). A real scan is mostly slices without liver (neck, chest, pelvis) and 8-bit slices
come in other windows. This command reads whole volumes the way ``liverseg-infer`` reads
them (:meth:`Volume.axial`: axial, radiological view; each slice resampled to the model's
pixel spacing with :func:`resize_gray`), and writes every slice as an 8-bit PNG in the
contract's window (HU 0..255) and in ``--extra-windows`` more windows drawn per slice
from :data:`WINDOWS`, each with its mask (0/255), plus ``x.csv`` / ``y.csv`` (the
study's CSV format, absolute paths) and ``manifest.csv`` (source, slice, window, liver
pixels, patient).

Which volumes (:data:`SOURCES`), and which of their slices are trusted:

* ``lits-117``: a 128-slice LiTS crop around the liver, expert labels (label > 0).
* ``totalseg-example``: abdomen and pelvis at 3 mm. Its top 30 slices (array 82-111)
  carry TotalSegmentator's pseudo-labels (class 5 = liver); the liver continues a few
  slices below them without a label, so only slices more than ``UNLABELLED_MARGIN_MM``
  below the lowest labelled slice are used as "no liver" (the pelvis and lower abdomen).

Kept out on purpose, as tests of the trained model: ``ircadb-17`` (a whole abdomen with
liver), ``totalseg-s0003`` (head and neck, no liver) and ``chaos-ct-case`` (another
dataset and scanner).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liverseg.core.intensity import window_to_gray
from liverseg.core.png import encode_png
from liverseg.core.resample import resize_mask, resize_probability, target_shape
from liverseg.core.volume import Volume, read_volume

__all__ = ["SOURCES", "WINDOWS", "VolumeSlice", "main", "percentile_gray", "render"]

MODEL_SPACING_MM = 1.5  # the reference model's pixel spacing (its contract's ct.pixel_spacing_mm)
UNLABELLED_MARGIN_MM = 50.0  # totalseg-example: "no liver" only this far below the lowest labelled slice
BODY_HU = -500.0  # above this: body (soft tissue, fat, bone); below: air and lung

# name -> (low, high) HU. "standard" is the contract's window; the others are the windows 8-bit
# CT slices are commonly exported with (wide/lung-ish, abdomen, liver, narrow) and "percentile".
WINDOWS: dict[str, tuple[float, float] | None] = {
    "standard": (0.0, 255.0),
    "wide": (-1000.0, 760.0),
    "wide-lung": (-1200.0, 300.0),
    "abdomen": (-160.0, 240.0),
    "soft": (-125.0, 225.0),
    "liver": (-40.0, 200.0),
    "narrow": (20.0, 180.0),
    "percentile": None,  # body 0.5..99.5 percentile to 0..255, the air outside a gray level
}


@dataclass(frozen=True)
class VolumeSlice:
    """One axial slice of a volume, in HU at the model's pixel spacing, with its mask."""

    source: str
    index: int
    hu: np.ndarray  # float32 [R, C]
    mask: np.ndarray  # bool [R, C]


def _hu_slices(
    vol: Volume, label: np.ndarray | None, keep: Callable[[int, int], bool], name: str
) -> Iterator[VolumeSlice]:
    ax = vol.axial()
    lab = None if label is None else label
    sl, row, col = vol.axial_spacing() if vol.spacing_trusted else (1.0, MODEL_SPACING_MM, MODEL_SPACING_MM)
    k, r, c = ax.shape
    shape = target_shape((r, c), (row, col), MODEL_SPACING_MM)
    for i in range(k):
        if not keep(i, k):
            continue
        hu = np.asarray(ax[i], dtype=np.float32)
        m = np.zeros((r, c), dtype=bool) if lab is None else np.asarray(lab[i], dtype=bool)
        if shape != (r, c):
            hu = resize_probability(hu, shape)  # bilinear on float32, as for probability maps
            m = resize_mask(m.astype(np.uint8), shape).astype(bool)
        yield VolumeSlice(name, i, hu, m)


def _axial_label(path: Path, vol: Volume, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    lab = read_volume(path)
    lab.view_affine = vol.view_affine
    return transform(np.asarray(lab.axial()))


def lits117(data: Path) -> Iterator[VolumeSlice]:
    vol = read_volume(data / "lits-117" / "volume.nii.gz")
    lab = _axial_label(data / "lits-117" / "segmentation.nii.gz", vol, lambda a: a > 0)
    yield from _hu_slices(vol, lab, lambda i, k: True, "lits-117")


def totalseg_example(data: Path) -> Iterator[VolumeSlice]:
    folder = data / "totalseg-example"
    vol = read_volume(folder / "ct.nii.gz")
    seg = read_volume(folder / "seg_crop.nii.gz").data  # [X, Y, 30]: array slices 82..111 of ct.nii.gz
    full = np.zeros(vol.shape, dtype=bool)
    top = vol.shape[2] - seg.shape[2]
    full[:, :, top:] = np.asarray(seg) == 5
    lab = Volume(full.astype(np.uint8), vol.affine, "seg", "nifti", view_affine=vol.view_affine)
    ax_lab = np.asarray(lab.axial())
    # the axial order runs inferior -> superior; the labelled slices are the top 30
    labelled = np.flatnonzero(ax_lab.any(axis=(1, 2)))
    lowest = int(labelled.min()) if labelled.size else ax_lab.shape[0]
    step = vol.axial_spacing()[0]
    below = lowest - int(np.ceil(UNLABELLED_MARGIN_MM / step))
    n = ax_lab.shape[0]
    first_crop = n - seg.shape[2]

    def keep(i: int, k: int) -> bool:
        return i < below or i >= first_crop  # the unlabelled slices just below the crop are left out

    yield from _hu_slices(vol, ax_lab, keep, "totalseg-example")


SOURCES: dict[str, Callable[[Path], Iterator[VolumeSlice]]] = {
    "lits-117": lits117,
    "totalseg-example": totalseg_example,
}


def percentile_gray(hu: np.ndarray, background: int) -> np.ndarray:
    """The body's 0.5..99.5 percentile range stretched to 0..255; the air outside it set to ``background``."""
    body = hu > BODY_HU
    if not body.any():
        return np.full(hu.shape, background, dtype=np.uint8)
    lo, hi = np.percentile(hu[body], [0.5, 99.5])
    g = np.clip((hu - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255)
    g[~body] = background
    return np.rint(g).astype(np.uint8)


def render(hu: np.ndarray, window: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 gray of an HU slice in the named window (see :data:`WINDOWS`)."""
    w = WINDOWS[window]
    if w is None:
        return percentile_gray(hu, int(rng.integers(20, 110)))
    return window_to_gray(hu, "hu", w, window)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs and the CSV lists")
    ap.add_argument("--extra-windows", type=int, default=2, help="windows besides the standard one per slice")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    others = [w for w in WINDOWS if w != "standard"]
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, source in SOURCES.items():
        for s in source(args.data):
            windows = ["standard", *rng.choice(others, size=args.extra_windows, replace=False)]
            for w in windows:
                stem = f"{name}-{s.index:03d}-{w}"
                img, msk = args.out / "images" / f"{stem}.png", args.out / "masks" / f"{stem}.png"
                img.write_bytes(encode_png(render(s.hu, str(w), rng)))
                msk.write_bytes(encode_png((s.mask * 255).astype(np.uint8)))
                rows.append((str(img.resolve()), str(msk.resolve()), name, s.index, w, int(s.mask.sum())))
    with open(args.out / "x.csv", "w", newline="") as fx, open(args.out / "y.csv", "w", newline="") as fy:
        fx.write("X\n" + "".join(f"{r[0]}\n" for r in rows))
        fy.write("Y\n" + "".join(f"{r[1]}\n" for r in rows))
    with open(args.out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "source", "slice", "window", "liver_pixels"])
        w.writerows(rows)
    n_liver = sum(1 for r in rows if r[5] > 0)
    print(f"{len(rows)} slices ({n_liver} with liver) from {', '.join(SOURCES)} -> {args.out}")


if __name__ == "__main__":
    main()
