"""Whole scans and other windows: where the liver is, and where it is not.

Rows of ``python -m liverseg.benchmarks.reference`` beside the slice rows, each run the way
``liverseg-infer`` runs a volume with its default options (the Python API,
:class:`liverseg.Segmenter`: windowing, resampling to the model's pixel spacing, the model,
back to the scan's grid, the anatomy rule of :mod:`liverseg.predict.anatomy`):

* ``totalseg-s0003``: a head-and-neck CT with no liver; the liver found in mL (target: under 5).
* ``totalseg-example``: an abdomen-pelvis CT whose liver is cut by the top of the field of
  view; the liver found more than 5 cm below the lowest pseudo-labelled liver slice, in mL
  (target: under 5), and Dice against the pseudo-labels of the top 30 slices.
* ``ircadb-17``: a whole abdominal CT with an expert label: 3D Dice, HD95, volumes
  (targets: Dice 0.95, HD95 10 mm).
* ``chaos-dicom``: the CHAOS DICOM series against its 78 PNG masks: 3D Dice (target 0.96).
* ``windows``: the slices of ``ircadb-17`` (a patient never trained on) exported as 8-bit
  images in other windows -- wide (-1000..760 HU), narrow (40..140 HU), soft tissue
  (-160..240 HU), percentile-normalised with a gray background, and the whole slice
  z-scored (-3..3 SD to 0..255: a normalisation no training slice had) -- each run as a 2D
  image, as a folder of such PNGs would be; pooled Dice over the volume (target 0.90 each),
  and the contract's own window (HU 0..255) beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BELOW_LIVER_MM", "WINDOW_ROWS", "scan_rows"]

BELOW_LIVER_MM = 50.0


def _axial(mask_ijk: np.ndarray, like: Any) -> np.ndarray:
    from liverseg.core.volume import Volume

    vol = Volume(np.asarray(mask_ijk), like.affine, "mask", like.kind, view_affine=like.view_affine)
    return np.asarray(vol.axial()) > 0


def _ml(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    return float(np.count_nonzero(mask)) * spacing[0] * spacing[1] * spacing[2] / 1000.0


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    s = int(p.sum()) + int(t.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(p & t)) / s


def no_liver_scan(seg: Any, data: Path) -> dict[str, Any]:
    from liverseg.core.volume import read_volume

    path = data / "totalseg-s0003" / "ct.nii.gz"
    vol = read_volume(path)
    pred = _axial(seg(str(path)), vol)
    return {"liver_ml": round(_ml(pred, vol.axial_spacing()), 2), "target": "under 5 mL"}


def totalseg_example(seg: Any, data: Path) -> dict[str, Any]:
    from liverseg.core.volume import read_volume

    folder = data / "totalseg-example"
    vol = read_volume(folder / "ct.nii.gz")
    sp = vol.axial_spacing()
    pred = _axial(seg(str(folder / "ct.nii.gz")), vol)
    seg_crop = np.asarray(read_volume(folder / "seg_crop.nii.gz").data)
    full = np.zeros(vol.shape, dtype=np.uint8)
    full[:, :, vol.shape[2] - seg_crop.shape[2] :] = seg_crop == 5
    truth = _axial(full, vol)
    labelled = np.flatnonzero(truth.any(axis=(1, 2)))
    lowest = int(labelled.min())
    limit = lowest - int(np.ceil(BELOW_LIVER_MM / sp[0]))
    top = slice(vol.shape[2] - seg_crop.shape[2], None)  # axial order runs inferior -> superior
    return {
        "liver_ml": round(_ml(pred, sp), 1),
        "liver_ml_more_than_5cm_below": round(_ml(pred[: max(limit, 0)], sp), 2),
        "dice_top_30_slices_vs_pseudo_labels": round(_dice(pred[top], truth[top]), 4),
        "target": "under 5 mL more than 5 cm below the lowest labelled liver slice",
    }


def ircadb(seg: Any, data: Path) -> dict[str, Any]:
    from liverseg.core.metrics3d import volume_metrics
    from liverseg.core.volume import read_volume

    folder = data / "ircadb-17"
    vol = read_volume(folder / "ct.nii.gz")
    pred = _axial(seg(str(folder / "ct.nii.gz")), vol)
    truth = _axial(read_volume(folder / "liver.nii.gz").data, vol)
    m = volume_metrics(pred, truth, vol.axial_spacing())
    return {
        "dice": round(float(m["dice"] or 0), 4),
        "hd95_mm": None if m["hd95_mm"] is None else round(float(m["hd95_mm"]), 1),
        "assd_mm": None if m["assd_mm"] is None else round(float(m["assd_mm"]), 2),
        "liver_ml": round(float(m["volume_ml"] or 0), 1),
        "liver_ml_true": round(float(m["volume_ml_true"] or 0), 1),
        "target": "Dice 0.95, HD95 10 mm",
    }


def chaos_dicom(seg: Any, data: Path) -> dict[str, Any]:
    from PIL import Image

    from liverseg.core.dicom import read_series

    folder = data / "chaos-ct-case"
    vol = read_series(folder / "dicom")
    pred = _axial(seg(str(folder / "dicom")), vol)
    k = pred.shape[0]
    # axial slice kk (inferior -> superior) is file i(77-kk), whose mask is liver_GT (77-kk)
    masks = sorted((folder / "masks").glob("*.png"))
    truth = np.stack([np.asarray(Image.open(masks[k - 1 - kk]).convert("L")) > 0 for kk in range(k)])
    return {
        "dice": round(_dice(pred, truth), 4),
        "liver_ml": round(_ml(pred, vol.axial_spacing()), 1),
        "target": "Dice 0.96",
    }


def _window(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    from liverseg.core.intensity import window_to_gray

    return lambda hu: window_to_gray(hu, "hu", (lo, hi), "window")


def _percentile(hu: np.ndarray) -> np.ndarray:
    from liverseg.trainer.slices import percentile_gray

    return percentile_gray(hu.astype(np.float32), 80)


def _zscore(hu: np.ndarray) -> np.ndarray:
    """The whole slice z-scored, -3..3 SD mapped to 0..255 (air a dark gray): a normalisation never trained on."""
    x = hu.astype(np.float32)
    z = (x - x.mean()) / max(float(x.std()), 1e-3)
    return np.rint(np.clip((z + 3.0) * (255.0 / 6.0), 0, 255)).astype(np.uint8)


WINDOW_ROWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "contract window (0..255 HU)": _window(0.0, 255.0),
    "wide (-1000..760 HU)": _window(-1000.0, 760.0),
    "narrow (40..140 HU)": _window(40.0, 140.0),
    "soft tissue (-160..240 HU)": _window(-160.0, 240.0),
    "percentile, gray background": _percentile,
    "z-score -3..3 SD, never trained on": _zscore,
}


def windows(seg: Any, data: Path) -> dict[str, Any]:
    from liverseg.core.volume import read_volume

    folder = data / "ircadb-17"
    vol = read_volume(folder / "ct.nii.gz")
    hu = np.asarray(vol.axial())
    truth = _axial(read_volume(folder / "liver.nii.gz").data, vol)
    out: dict[str, Any] = {}
    for name, render in WINDOW_ROWS.items():
        tp = fp = fn = 0
        for k in range(hu.shape[0]):
            pred = np.asarray(seg(render(hu[k]))) > 0
            t = truth[k]
            tp += int(np.count_nonzero(pred & t))
            fp += int(np.count_nonzero(pred & ~t))
            fn += int(np.count_nonzero(~pred & t))
        out[name] = {"dice_pooled": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "slices": int(hu.shape[0])}
    return out


ROWS: dict[str, tuple[str, Callable[[Any, Path], dict[str, Any]]]] = {
    "totalseg-s0003 (head and neck, no liver)": ("totalseg-s0003", no_liver_scan),
    "totalseg-example (abdomen-pelvis)": ("totalseg-example", totalseg_example),
    "ircadb-17 (whole abdomen, never trained on)": ("ircadb-17", ircadb),
    "chaos-ct-case DICOM series vs its PNG masks": ("chaos-ct-case", chaos_dicom),
    "ircadb-17 slices as 8-bit images in other windows": ("ircadb-17", windows),
}


def scan_rows(model: Path, data: Path, engine: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """Every row of the module docstring whose data is present, with ``model`` as ``liverseg-infer`` runs it."""
    from liverseg.api import Segmenter

    rows: dict[str, Any] = {}
    with Segmenter(model, device="cpu", engine=engine, precision=precision) as seg:
        for name, (folder, row) in ROWS.items():
            if (data / folder).is_dir():
                rows[name] = row(seg, data)
    return rows


def scan_table(rows: dict[str, Any]) -> str:
    """The rows as text, one line each."""
    lines = []
    for name, r in rows.items():
        if name.endswith("other windows"):
            for w, v in r.items():
                lines.append(f"{name}: {w}: pooled Dice {v['dice_pooled']:.4f} over {v['slices']} slices")
            continue
        shown = ", ".join(f"{k} {v}" for k, v in r.items() if k != "target")
        lines.append(f"{name}: {shown} (target: {r['target']})")
    return "\n".join(lines)
