"""CT volumes in ``liverseg-infer``: reading, the label, the outputs and their tables.

One volume (a NIfTI/NRRD/MetaImage file, a DICOM series folder or a DICOMweb series) is one
input of a run, with its own row, failure isolation and ``--resume`` like a slice:

1. :func:`load_volume` (a decode thread) reads it (:mod:`liverseg.core.volume`,
   :mod:`liverseg.core.dicom`, :mod:`liverseg.infer.dicomweb`) and its label, and hands it to
   :func:`liverseg.predict.predictor.volume_input`, which checks it and prepares its slices
   for the model in the background (window, resample, landmarks: streamed into the model).
2. The model thread runs :meth:`liverseg.predict.predictor.Predictor.predict_volume`.
3. :class:`VolumeWriter` (a write thread) has the predictor clean the mask up and raise its
   quality flags (:meth:`~liverseg.predict.predictor.Predictor.finish_volume`), writes the NIfTI
   mask with the input's shape and affine (a DICOM series gets the affine of its geometry), the
   probability volume and DICOM-SEG when asked, overlays of a few axial slices and one coronal
   slice, the report viewer's data of every slice (:mod:`liverseg.infer.viewer`), the per-slice
   table, and scores the volume against its label: Dice, IoU, the study's mPA/mIoU over voxels,
   HD95, ASSD, NSD at 2 mm (:mod:`liverseg.core.metrics3d`) and the liver volume in mL.

No patient identifiers from DICOM headers reach the rows, the logs or the report.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverseg.core.dicom import read_scan, read_seg_mask, write_seg
from liverseg.core.errors import DataError, describe
from liverseg.core.files import write_bytes_atomic, write_text_atomic
from liverseg.core.metrics import scores
from liverseg.core.metrics3d import volume_metrics, volume_ml
from liverseg.core.overlay import overlay_rgb
from liverseg.core.png import encode_png
from liverseg.core.volume import Volume, read_volume, write_nifti
from liverseg.infer.viewer import payload_json, volume_frames, volume_payload
from liverseg.predict.predictor import Prep, VolumeInput, volume_input
from liverseg.predict.qc import flag_codes

if TYPE_CHECKING:
    from liverseg.predict.predictor import Predictor

__all__ = [
    "OVERLAY_SLICES",
    "SLICES_DIR",
    "VIEWER_SUFFIX",
    "VOLUME_COLUMNS",
    "VolumeWriter",
    "load_volume",
    "per_volume_table",
    "statistics_json",
    "volume_summary",
    "write_volume_tables",
]

SLICES_DIR = "slices"
PER_VOLUME = "per_volume.csv"
STATISTICS = "statistics.json"  # the liver's statistics per volume (liverseg.predict.qc)
OVERLAY_SLICES = 3  # axial overlays per volume (at 25, 50 and 75% of the liver's extent), plus one coronal
VIEWER_SUFFIX = "_viewer.json"  # overlays/<key>_viewer.json: the report viewer's data of a volume
NSD_TOLERANCE_MM = 2.0

VOLUME_COLUMNS = (
    "index",
    "input",
    "label",
    "output",
    "status",
    "error",
    "kind",
    "shape",
    "spacing_mm",
    "n_slices",
    "model_grid",
    "dice",
    "iou",
    "mPA",
    "mIoU",
    "hd95_mm",
    "assd_mm",
    "nsd_2mm",
    "volume_ml",
    "volume_ml_true",
    "removed_voxels",
    "seconds",
    "qc_flags",
    "complete",
    "hu_mean",
    "hu_median",
    "hu_std",
    "extent_cc_mm",
    "bbox_ras_mm",
    "notes",
)

Row = dict[str, Any]


# ---------------------------------------------------------------- reading


def _read(path: str, kind: str, prep: Prep) -> Volume:
    if kind == "dicomweb":
        from liverseg.infer.dicomweb import read_series_url

        return read_series_url(path, allow_gaps=prep.allow_gaps)
    return read_scan(path, prep.series, allow_gaps=prep.allow_gaps)


def _label(path: str, vol: Volume) -> np.ndarray:
    """bool [K, R, C] label in the model's view; label > 0 is liver. Must lie on the input's grid."""
    if path.lower().endswith(".dcm") and vol.kind == "dicom":  # a DICOM-SEG of this series
        seg = np.asarray(read_seg_mask(path, vol), dtype=bool)  # [K, R, C] in the series' slice order
        lab = Volume(seg.transpose(2, 1, 0), vol.affine, path, "dicom-seg", view_affine=vol.view_affine)
        return np.ascontiguousarray(lab.axial())
    lab = read_volume(path)
    if lab.shape != vol.shape:
        raise DataError(f"{path}: label has shape {lab.shape} but the volume {vol.source} has {vol.shape}")
    if not np.allclose(lab.affine, vol.affine, atol=1e-3):
        raise DataError(f"{path}: label's affine differs from the volume's ({vol.source}); they must share the grid")
    lab.view_affine = vol.view_affine
    return np.ascontiguousarray(lab.axial() > 0)


def load_volume(image: str, label: str | None, kind: str, prep: Prep) -> VolumeInput:
    """Read one volume and its label, its slices prepared for the model behind (streamed). Raises DataError
    naming the file."""
    vi = volume_input(_read(image, kind, prep), prep)
    if label is not None:
        try:
            vi.truth = _label(label, vi.volume)
        except DataError as e:
            vi.label_error = str(e)
        except Exception as e:
            vi.label_error = f"{label}: cannot read label ({describe(e)})"
    return vi


# ---------------------------------------------------------------- writing


def _fmt(v: Any) -> Any:
    return "" if v is None else (round(v, 6) if isinstance(v, float) else v)


def _overlay_slices(pred: np.ndarray, truth: np.ndarray | None) -> list[int]:
    """Axial slices to draw: 25/50/75% through the liver's extent (truth's, else the prediction's)."""
    ref = truth if truth is not None and truth.any() else pred
    ks = np.flatnonzero(ref.any(axis=(1, 2)))
    if ks.size == 0:
        return [pred.shape[0] // 2]
    lo, hi = int(ks[0]), int(ks[-1])
    picks = sorted({int(round(lo + f * (hi - lo))) for f in (0.25, 0.5, 0.75)})
    return picks[:OVERLAY_SLICES]


def _coronal(arr: np.ndarray, row: int, stretch: float) -> np.ndarray:
    """The coronal slice at image row ``row`` of a [K, R, C] array, superior at the top, in true proportions."""
    img = np.ascontiguousarray(arr[::-1, row, :])  # slices run inferior -> superior; the top is superior
    rows = max(1, int(round(img.shape[0] * stretch)))
    if rows == img.shape[0]:
        return img
    idx = np.minimum((np.arange(rows) / stretch).astype(int), img.shape[0] - 1)
    return img[idx]


class VolumeWriter:
    """Writes one volume's files and returns its row (called from a write thread)."""

    def __init__(
        self, out: Path, predictor: Predictor, overlays: bool, software_version: str, store: Any = None
    ) -> None:
        self.out, self.predictor, self.overlays, self.version = out, predictor, overlays, software_version
        self.prep = predictor.prep
        self.store = store  # --store: a liverseg.infer.dicomweb.Store each DICOM-SEG is sent to
        self._early: ThreadPoolExecutor | None = None

    def early(self, vi: VolumeInput) -> None:
        """Start what needs no mask while the model runs: the report viewer's pictures of the slices (its part of a
        512x512x300 series' writing went from 0.40 to 0.26 s after the model; in-process timeline, AMD EPYC Zen 3)."""
        if not self.overlays:
            return
        if self._early is None:
            self._early = ThreadPoolExecutor(1, thread_name_prefix="liverseg-early")

        def frames() -> list[str]:
            vi.complete()
            return volume_frames(vi.gray)

        vi.extras["viewer_frames"] = self._early.submit(frames)

    def _put_png(self, name: str, arr: np.ndarray) -> list[Any]:
        return [name, write_bytes_atomic(self.out / name, encode_png(arr), fsync=False)]

    def write(self, row: Row, it: Any, vi: VolumeInput, mask: np.ndarray, prob: np.ndarray | None) -> Row:
        """Fill ``row`` (the per_image.csv base row of ``it``) with the volume's files, metrics and columns."""
        vol = vi.volume
        done = self.predictor.finish_volume(vi, mask)
        pred, removed = done.mask, done.removed
        row["qc_flags"] = ";".join(done.flags)
        row.update(done.statistics)
        files: dict[str, list[Any]] = {}
        mask_file = vol.from_axial(pred.view(np.uint8), contiguous=False)
        files["mask"] = [it.mask_name, write_nifti(self.out / it.mask_name, mask_file, vol, fsync=False)]
        del mask_file
        if prob is not None and self.prep.save_probabilities:
            files["probability"] = [
                it.prob_name,
                write_nifti(
                    self.out / it.prob_name, vol.from_axial(prob, contiguous=False), vol, dtype=np.float32, fsync=False
                ),
            ]
        if self.prep.dicom_seg and vol.kind == "dicom":
            name = f"masks/{it.key}_seg.dcm"
            source_order = vol.from_axial(pred.view(np.uint8)).transpose(2, 1, 0)
            uids = self.store.uids(vol) if self.store is not None else {}
            write_seg(vol, source_order, self.out / name, software_version=self.version, **uids)
            files["seg"] = [name, (self.out / name).stat().st_size]
        if self.overlays:
            files.update(self._overlays(it.key, vi, pred))
        metrics = self._metrics(vi, pred)
        files["slices"] = self._slices_table(it.key, vi, pred)
        k, r, c = pred.shape
        counts = [metrics.get(n) for n in ("tp", "fp", "fn", "tn")]
        row.update(
            output=it.mask_name,
            height=r,
            width=c,
            liver_fraction=float(np.count_nonzero(pred)) / pred.size,
            _files=files,
            kind=vol.kind,
            shape="x".join(str(s) for s in vol.shape),
            spacing_mm="x".join(f"{s:g}" for s in (vi.spacing[2], vi.spacing[1], vi.spacing[0])),
            n_slices=k,
            model_grid="x".join(str(s) for s in vi.model_in.shape[1:]),
            removed_voxels=removed,
            notes="; ".join(vi.notes),
            volume_ml=metrics["volume_ml"],
            volume_ml_true=metrics.get("volume_ml_true"),
        )
        if counts[0] is not None:
            tp, fp, fn, tn = (int(n or 0) for n in counts)
            row.update(scores(tp, fp, fn, tn))
            row.update(tp=tp, fp=fp, fn=fn, tn=tn)
            for key in ("dice", "iou", "mPA", "mIoU", "hd95_mm", "assd_mm", "nsd_2mm"):
                row[key] = metrics[key]
        if self.store is not None:  # the SEG is complete: send it (an input not sent fails and is redone)
            if "seg" not in files:
                row["notes"] = "; ".join([*vi.notes, "not stored: only a DICOM series input has a DICOM-SEG"])
            else:
                try:
                    said = [self.store.put(self.out / files["seg"][0])]
                    if self.store.overlay:
                        said.append(self.store.put_overlay(vol, vi.gray, pred, self.version))
                    row["notes"] = "; ".join([*vi.notes, *said])
                except DataError as e:
                    row["error"] = str(e)
                    return row
        if vi.label_error:
            row["error"] = f"label: {vi.label_error}"
        else:
            row["status"] = "ok"
        return row

    def _metrics(self, vi: VolumeInput, pred: np.ndarray) -> dict[str, Any]:
        spacing = vi.spacing  # (slice, row, column), the axes of pred
        if vi.truth is None:
            return {"volume_ml": volume_ml(pred, spacing)}
        return dict(volume_metrics(pred, vi.truth, spacing, tolerance_mm=NSD_TOLERANCE_MM))

    def _slices_table(self, key: str, vi: VolumeInput, pred: np.ndarray) -> list[Any]:
        """slices/<key>.csv: per axial slice (model view order), liver pixels predicted and true, and Dice."""
        lines = ["slice,position_mm,pred_pixels,true_pixels,dice"]
        npred = pred.reshape(pred.shape[0], -1).sum(axis=1)
        ntrue = vi.truth.reshape(pred.shape[0], -1).sum(axis=1) if vi.truth is not None else None
        inter = (pred & vi.truth).reshape(pred.shape[0], -1).sum(axis=1) if vi.truth is not None else None
        for k in range(pred.shape[0]):
            pos = f"{k * vi.spacing[0]:.3f}"
            if ntrue is None or inter is None:
                lines.append(f"{k},{pos},{int(npred[k])},,")
                continue
            denom = int(npred[k]) + int(ntrue[k])
            dice = "" if denom == 0 else f"{2.0 * int(inter[k]) / denom:.6f}"
            lines.append(f"{k},{pos},{int(npred[k])},{int(ntrue[k])},{dice}")
        name = f"{SLICES_DIR}/{key}.csv"
        write_text_atomic(self.out / name, "\n".join(lines) + "\n", fsync=False)
        return [name, (self.out / name).stat().st_size]

    def _overlays(self, key: str, vi: VolumeInput, pred: np.ndarray) -> dict[str, list[Any]]:
        files: dict[str, list[Any]] = {}
        truth = vi.truth
        for n, k in enumerate(_overlay_slices(pred, truth)):
            img = overlay_rgb(vi.gray[k], pred[k], None if truth is None else truth[k])
            files[f"overlay_axial_{n}"] = self._put_png(f"overlays/{key}_axial_{k:04d}.png", img)
        ref = truth if truth is not None and truth.any() else pred
        rows = np.flatnonzero(ref.any(axis=(0, 2)))
        row = int(rows[len(rows) // 2]) if rows.size else pred.shape[1] // 2
        stretch = vi.spacing[0] / vi.spacing[2]
        img = overlay_rgb(
            _coronal(vi.gray, row, stretch),
            _coronal(pred, row, stretch),
            None if truth is None else _coronal(truth, row, stretch),
        )
        files["overlay_coronal"] = self._put_png(f"overlays/{key}_coronal.png", img)
        files["viewer"] = self._viewer(key, vi, pred)
        return files

    def _viewer(self, key: str, vi: VolumeInput, pred: np.ndarray) -> list[Any]:
        """overlays/<key>_viewer.json: what report.html's viewer carries of the volume (liverseg.infer.viewer)."""
        early = vi.extras.pop("viewer_frames", None)
        frames = early.result() if early is not None else None
        payload = volume_payload(vi.gray, pred, vi.truth, vi.spacing, vi.volume, frames)
        name = f"overlays/{key}{VIEWER_SUFFIX}"
        return [name, write_bytes_atomic(self.out / name, payload_json(payload).encode("ascii"), fsync=False)]


def volume_csv_line(row: Row) -> str:
    """One per_volume.csv line in :data:`VOLUME_COLUMNS` order."""
    cells = []
    for c in VOLUME_COLUMNS:
        v = _fmt(row.get(c))
        s = "" if v is None else str(v)
        if any(ch in s for ch in ',"\n\r'):
            s = '"' + s.replace('"', '""') + '"'
        cells.append(s)
    return ",".join(cells) + "\n"


def per_volume_table(rows: list[Row]) -> str:
    """per_volume.csv: a header and one line per volume input, in input order."""
    return ",".join(VOLUME_COLUMNS) + "\n" + "".join(volume_csv_line(r) for r in sorted(rows, key=lambda r: r["index"]))


def write_volume_tables(out: Path, rows: list[Row]) -> None:
    """``per_volume.csv`` and ``statistics.json`` of a run's (or a merged split run's) volume rows, in ``out``."""
    write_text_atomic(out / PER_VOLUME, per_volume_table(rows))
    write_text_atomic(out / STATISTICS, json.dumps(statistics_json(rows), indent=1, default=str) + "\n")


def statistics_json(rows: list[Row]) -> dict[str, Any]:
    """statistics.json: the liver's statistics of every volume written (liverseg.predict.qc), in input order."""
    out = []
    for r in sorted(rows, key=lambda r: r["index"]):
        if r.get("status") != "ok" and not r.get("_files"):
            continue
        bbox = [float(v) for v in str(r.get("bbox_ras_mm") or "").split()]
        out.append(
            {
                "input": r.get("input"),
                "mask": r.get("output"),
                "volume_ml": r.get("volume_ml"),
                "complete": r.get("complete") in (True, "True"),
                "hu_mean": r.get("hu_mean"),
                "hu_median": r.get("hu_median"),
                "hu_std": r.get("hu_std"),
                "extent_cc_mm": r.get("extent_cc_mm"),
                "bbox_ras_mm": {"min": bbox[:3], "max": bbox[3:]} if bbox else None,
                "qc_flags": flag_codes(r.get("qc_flags")),
            }
        )
    return {
        "about": "the liver of each volume: volume_ml is a whole liver's only where complete is true (else the part "
        "inside the field of view); HU inside the mask; bounding box in RAS+ mm",
        "volumes": out,
    }


def volume_summary(rows: list[Row]) -> dict[str, Any] | None:
    """summary.json's ``volume_metrics``: counts, means and medians over the volumes, or None without volumes."""
    if not rows:
        return None
    ok = [r for r in rows if r.get("status") == "ok" or r.get("_files")]
    out: dict[str, Any] = {"n_volumes": len(rows), "n_ok": sum(1 for r in rows if r.get("status") == "ok")}
    labelled = [r for r in ok if r.get("dice") not in (None, "")]
    out["n_labelled"] = len(labelled)
    for key in ("dice", "iou", "mPA", "mIoU", "hd95_mm", "assd_mm", "nsd_2mm"):
        vals = [float(r[key]) for r in labelled if r.get(key) not in (None, "")]
        out[key] = {"mean": float(np.mean(vals)), "median": float(np.median(vals)), "n": len(vals)} if vals else None
    out["n_undefined_distance"] = sum(1 for r in labelled if r.get("hd95_mm") in (None, ""))
    vols = [float(r["volume_ml"]) for r in ok if r.get("volume_ml") not in (None, "")]
    out["volume_ml"] = {"mean": float(np.mean(vols)), "total": float(np.sum(vols))} if vols else None
    pairs = [
        (float(r["volume_ml"]), float(r["volume_ml_true"]))
        for r in labelled
        if r.get("volume_ml_true") not in (None, "")
    ]
    out["volume_error_ml"] = (
        {"mean_abs": float(np.mean([abs(p - t) for p, t in pairs])), "mean": float(np.mean([p - t for p, t in pairs]))}
        if pairs
        else None
    )
    out["rules"] = (
        "Dice/IoU/mPA/mIoU over voxels; hd95 = max of the two directed 95th-percentile boundary distances "
        "(MONAI); assd = mean of both directions' boundary distances; nsd_2mm = boundary fraction within 2 mm; "
        "distances are undefined (empty cells) when exactly one of prediction and label is empty"
    )
    return out
