"""CT volumes in the inference runner: reading, windowing, resampling, the model over slices, outputs, metrics.

One volume (a NIfTI/NRRD/MetaImage file or a DICOM series folder) is one input of a
run, with its own row, failure isolation and ``--resume`` like a slice:

1. :func:`load_volume` (a decode thread) reads it (:mod:`liverseg.core.volume`,
   :mod:`liverseg.core.dicom`), windows its CT numbers to the model's gray input by the
   contract's HU window (:mod:`liverseg.core.intensity`), reorients it to the model's
   view (axial, radiological), and resamples each slice to the model's pixel spacing
   (:mod:`liverseg.core.resample`). The HU array is dropped once windowed: a volume
   holds its uint8 slices (and the resampled copy) while it is in flight.
2. :func:`predict_volume` (the model thread) runs the slices through the same model
   call as 2D inputs, ``batch_size`` at a time, and resizes each probability map back
   to the input grid, where it is thresholded.
3. :class:`VolumeWriter` (a write thread) cleans the mask up when asked (largest 3D
   component, small blobs), writes the NIfTI mask with the input's shape and affine
   (a DICOM series gets the affine of its geometry), the probability volume and
   DICOM-SEG when asked, overlays of a few axial slices and one coronal slice, the
   report viewer's data of every slice (:mod:`liverseg.core.viewer`), the per-slice
   table, and scores the volume against its label: Dice, IoU, the study's mPA/mIoU
   over voxels, HD95, ASSD, NSD at 2 mm (:mod:`liverseg.core.metrics3d`) and the liver
   volume in mL.

Spacing rules: a volume's voxel size comes from its header; ``--spacing`` overrides the
in-plane size (and gives 2D slices one). A header whose spacing cannot be trusted
(an identity affine, zero or >10 mm pixels) is used with a stated assumption: the
pixels are taken to be at the model's training spacing (so nothing is resampled) or,
when the model records none, at 1 mm; the note is printed and recorded in the row.
No patient identifiers from DICOM headers reach the rows, the logs or the report.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverseg.core.data import DEFAULT_MAX_PIXELS, encode_png
from liverseg.core.engine import usable_cores
from liverseg.core.errors import DataError, describe
from liverseg.core.intensity import check_windowed, interpret, window_to_gray
from liverseg.core.io import write_bytes_atomic, write_text_atomic
from liverseg.core.qc import flag_codes, liver_statistics, volume_flags
from liverseg.core.resample import resize_gray, resize_probability, target_shape
from liverseg.core.volume import Volume, read_volume, write_nifti

if TYPE_CHECKING:
    from liverseg.core.anatomy import Landmarks

__all__ = [
    "OVERLAY_SLICES",
    "SLICES_DIR",
    "VIEWER_SUFFIX",
    "VOLUME_COLUMNS",
    "Prep",
    "VolumeInput",
    "VolumeWriter",
    "clean_volume",
    "load_volume",
    "per_volume_table",
    "statistics_json",
    "write_volume_tables",
    "predict_volume",
    "second_looks",
    "volume_input",
    "volume_summary",
]

SLICES_DIR = "slices"
PER_VOLUME = "per_volume.csv"
STATISTICS = "statistics.json"  # the liver's statistics per volume (liverseg.core.qc)
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


@dataclass(frozen=True)
class Prep:
    """How every input becomes the model's input, and what is done to its mask (from options and contract)."""

    window: tuple[float, float] = (0.0, 255.0)  # HU -> gray 0..255
    model_spacing: float | None = None  # the contract's ct.pixel_spacing_mm
    spacing: float | None = None  # --spacing: in-plane mm of 2D inputs; overrides a volume's
    intensity: str = "auto"
    allow_gaps: bool = False
    series: str | None = None
    largest_component: bool = False
    anatomy: bool = True  # volumes: keep the largest region where a liver can be (liverseg.core.anatomy)
    min_blob: int = 0  # connected regions below this many voxels (pixels for slices) are removed
    dicom_seg: bool = False
    save_probabilities: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS  # images declaring more pixels are refused before decoding
    allow_non_ct: bool = False  # accept label maps, colour images, MR-like numbers (liverseg.core.ctcheck)

    @property
    def resamples(self) -> bool:
        """True when some input may be resampled (so the probability map is needed to go back)."""
        return self.model_spacing is not None


@dataclass
class SecondLooks:
    """The model's masks on flipped copies of a few of a volume's slices, for the quality flags (liverseg.core.qc)."""

    slices: np.ndarray  # int [n]: which slices (axial, the model's view)
    upside_down: np.ndarray  # bool [n, R, C]: the mask of each slice turned upside down, turned back
    mirrored_cm2: float  # the mean area per slice the model found in the slices mirrored left-right ...
    found_cm2: float  # ... and in the slices as they are (the model's own mask, before any rule)


@dataclass
class VolumeInput:
    """A decoded volume: geometry, the model's slices, the label; the HU voxels are gone."""

    volume: Volume
    gray: np.ndarray  # uint8 [K, R, C]: windowed slices on the input grid, in the model's view
    model_in: np.ndarray  # uint8 [K, R', C']: the same at the model's pixel spacing (``gray`` itself if equal)
    spacing: tuple[float, float, float]  # (slice, row, column) mm of ``gray``, as used
    truth: np.ndarray | None = None  # bool [K, R, C]
    notes: list[str] = field(default_factory=list)
    marks: Landmarks | None = None  # lungs and body centre, read from the HU voxels before they were freed
    left_mm: float | None = None  # where the model's own mask lies (liverseg.core.anatomy.on_the_left_mm)
    looks: SecondLooks | None = None  # the model on flipped copies of a few slices (second_looks)
    # the CT numbers (axial view, stored values; minus hu_offset for HU), kept for the liver's statistics until
    # the volume is written; None for a gray volume
    hu: np.ndarray | None = None
    hu_offset: float = 0.0
    label_error: str | None = None

    @property
    def resampled(self) -> bool:
        return self.model_in.shape != self.gray.shape


# ---------------------------------------------------------------- reading


def _read(path: str, kind: str, prep: Prep) -> Volume:
    if kind == "dicom":
        from liverseg.core.dicom import read_series

        return read_series(path, prep.series, allow_gaps=prep.allow_gaps)
    if kind == "dicomweb":
        from liverseg.infer.dicomweb import read_series_url

        return read_series_url(path, allow_gaps=prep.allow_gaps)
    return read_volume(path)


def _spacing(vol: Volume, prep: Prep, notes: list[str]) -> tuple[float, float, float]:
    """(slice, row, column) mm used for ``vol``: the header's, ``--spacing``, or a stated assumption."""
    sl, row, col = vol.axial_spacing()
    if prep.spacing is not None:
        if vol.spacing_trusted and (abs(row - prep.spacing) > 1e-3 or abs(col - prep.spacing) > 1e-3):
            notes.append(f"--spacing {prep.spacing:g} mm overrides the header's {col:g} x {row:g} mm pixels")
        return sl, prep.spacing, prep.spacing
    if vol.spacing_trusted:
        return sl, row, col
    assumed = prep.model_spacing if prep.model_spacing is not None else 1.0
    why = "the model's training spacing, so nothing is resampled" if prep.model_spacing else "the model records none"
    notes.append(
        f"assumed {assumed:g} mm pixels and {sl:g} mm slices ({why}); volume in mL and distances in mm rest "
        "on that; pass --spacing MM to give the true pixel size"
    )
    return sl, assumed, assumed


def _windowed(vol: Volume, prep: Prep, notes: list[str]) -> tuple[np.ndarray, str]:
    """uint8 [K, R, C] slices in the model's view, windowed by the contract (slice by slice, no float copy),
    and what the stored values were (:func:`interpret`)."""
    ax = vol.axial()
    modality = str(vol.meta.get("modality") or "")
    if modality and modality.upper() not in ("CT", ""):
        raise DataError(f"{vol.source}: modality is {modality}, not CT")
    kind = interpret(_sample(ax), prep.intensity, vol.source)
    if not prep.allow_non_ct:
        from liverseg.core.ctcheck import check_ct

        check_ct(_sample(ax), kind, vol.source, modality_known=modality.upper() == "CT")
    if kind == "gray" and vol.data.dtype != np.uint8:
        raise DataError(
            f"{vol.source}: its values ({vol.data.dtype}, no air below -200) do not look like CT numbers in HU "
            "(an MR scan, a mask, or stored values without their rescale?); pass --intensity hu or hu+1024 if "
            "they are CT"
        )
    gray = np.empty(ax.shape, dtype=np.uint8)
    for k in range(ax.shape[0]):
        window_to_gray(ax[k], kind, prep.window, vol.source, out=gray[k])
    check_windowed(gray, _sample(ax), kind, prep.window, vol.source)
    if kind != "hu":
        notes.append(f"intensities read as {kind}")
    return gray, kind


def _landmarks(vol: Volume, kind: str, spacing: tuple[float, float, float], notes: list[str]) -> Landmarks | None:
    """The lungs and body centre of a CT volume (None for gray volumes, or without scipy: said in a note)."""
    if kind == "gray":
        return None
    from liverseg.core.anatomy import landmarks

    try:
        return landmarks(vol.axial(), spacing, offset=1024.0 if kind == "hu+1024" else 0.0)
    except DataError as e:  # scipy is missing: the mask is written as the model gave it, and the note says so
        notes.append(f"anatomy check skipped: {e}")
        return None


def _sample(ax: np.ndarray) -> np.ndarray:
    """Every 8th slice: enough to tell what the values are without a pass over all of them."""
    return np.asarray(ax[:: max(1, ax.shape[0] // 16)])


def _label(path: str, vol: Volume) -> np.ndarray:
    """bool [K, R, C] label in the model's view; label > 0 is liver. Must lie on the input's grid."""
    from liverseg.core.dicom import read_seg_mask

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
    """Read, window, reorient and resample one volume; its label too. Raises DataError naming the file."""
    vi = volume_input(_read(image, kind, prep), prep)
    if label is not None:
        try:
            vi.truth = _label(label, vi.volume)
        except DataError as e:
            vi.label_error = str(e)
        except Exception as e:
            vi.label_error = f"{label}: cannot read label ({describe(e)})"
    return vi


def volume_input(vol: Volume, prep: Prep) -> VolumeInput:
    """Window, reorient and resample a volume read from a file or given as an array (the Python API)."""
    notes = list(vol.notes)
    gray, kind = _windowed(vol, prep, notes)
    spacing = _spacing(vol, prep, notes)
    marks = _landmarks(vol, kind, spacing, notes) if prep.anatomy else None
    hu = vol.axial() if kind != "gray" else None  # a view: the voxels stay until the statistics are taken
    vol.data = np.broadcast_to(np.zeros((), dtype=vol.data.dtype), vol.data.shape)
    k, r, c = gray.shape
    shape = target_shape((r, c), spacing[1:], prep.model_spacing)
    if shape != (r, c):
        model_in = np.empty((k, *shape), dtype=np.uint8)
        # one thread per core (Pillow releases the GIL): the model waits for these slices
        with ThreadPoolExecutor(max(1, min(usable_cores(), k)), thread_name_prefix="liverseg-resample") as pool:
            for i, small in enumerate(pool.map(lambda s: resize_gray(s, shape), gray)):
                model_in[i] = small
    else:
        model_in = gray
    return VolumeInput(
        vol, gray, model_in, spacing, notes=notes, marks=marks, hu=hu, hu_offset=1024.0 if kind == "hu+1024" else 0.0
    )


# ---------------------------------------------------------------- the model


def predict_volume(
    vi: VolumeInput, model: Any, batch_size: int, threshold: float, keep_probability: bool = False
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(mask uint8 [K, R, C], probability float32 [K, R, C] or None, seconds inside the model).

    The probability volume (4 bytes a voxel) is kept only when ``keep_probability``
    (``--save-probabilities``); otherwise each slice's map is used and dropped. Each
    batch's maps are brought back to the slice grid and thresholded in a helper thread
    while the model runs the next batch (Pillow and numpy release the GIL): done in turn,
    that was 0.35 s of a 512x512x300 series' 9.4 s in which the model waited.
    """
    k, r, c = vi.gray.shape
    mask = np.empty((k, r, c), dtype=np.uint8)
    prob_out: np.ndarray | None = None
    seconds = 0.0

    def place(k0: int, n: int, m: np.ndarray, p: np.ndarray | None) -> None:
        """The ``n`` slices of one batch's outputs into ``mask`` (and ``prob_out``) from slice ``k0`` on."""
        for j in range(n):
            back = _on_input_grid(vi, m, p, j, threshold, mask[k0 + j].view(bool))
            if prob_out is not None:
                if back is not None:
                    prob_out[k0 + j] = back
                elif p is not None:
                    prob_out[k0 + j] = p[j, 0]

    with ThreadPoolExecutor(1, thread_name_prefix="liverseg-volume") as helper:
        placing: Future[None] | None = None
        for k0 in range(0, k, batch_size):
            batch = np.ascontiguousarray(vi.model_in[k0 : k0 + batch_size, None])
            t = time.perf_counter()
            m, p = model(batch)
            seconds += time.perf_counter() - t
            if keep_probability and p is not None and prob_out is None:
                prob_out = np.empty((k, r, c), dtype=np.float32)
            if placing is not None:
                placing.result()  # one batch in the helper at a time; its error is raised here
            placing = helper.submit(place, k0, batch.shape[0], m, p)
        if placing is not None:
            placing.result()
    return mask, prob_out, seconds


def _on_input_grid(
    vi: VolumeInput, m: np.ndarray, p: np.ndarray | None, j: int, threshold: float, out: np.ndarray
) -> np.ndarray | None:
    """Item ``j`` of a batch's outputs as a bool mask on the input grid, into ``out``; the probability map
    brought back to that grid when the slices were resampled (else None)."""
    if not vi.resampled:
        np.not_equal(m[j, 0], 0, out=out)  # 0/1 whatever the model's mask holds
        return None
    if p is None:
        raise RuntimeError("resampled slices need the probability output")
    back = resize_probability(p[j, 0], out.shape)
    np.greater(back, threshold, out=out)
    return back


SECOND_LOOK_SLICES = 8  # slices looked at again, flipped (liverseg.core.qc: unstable, wrong_side)


def second_looks(vi: VolumeInput, mask: np.ndarray, model: Any, batch_size: int, threshold: float) -> float:
    """Run the model on flipped copies of a few slices that hold the model's ``mask``; seconds spent.

    Up to :data:`SECOND_LOOK_SLICES` slices, evenly spaced over those where the model found
    liver, are run once upside down (an augmentation the reference model was trained with: a
    stable prediction barely changes) and once mirrored left-right (one it was not: a
    correctly oriented scan loses most of its liver, a mirrored one gains it). Two batches of
    at most 8 slices (``batch_size`` at a time), about 5% of a 300-slice series' model time. The result goes to
    ``vi.looks`` for :func:`liverseg.core.qc.volume_flags`; nothing is done without a mask.
    """
    found = np.flatnonzero(mask.any(axis=(1, 2)))
    if found.size == 0:
        return 0.0
    picks = np.unique(found[np.round(np.linspace(0, found.size - 1, min(SECOND_LOOK_SLICES, found.size))).astype(int)])
    x = vi.model_in[picks]
    n, (r, c) = picks.size, vi.gray.shape[1:]
    turned = np.empty((n, r, c), dtype=bool)
    mirrored = np.empty((n, r, c), dtype=bool)
    t = time.perf_counter()
    for flipped, out, axis in ((x[:, ::-1, :], turned, 2), (x[:, :, ::-1], mirrored, 3)):
        for j0 in range(0, n, batch_size):
            m, p = model(np.ascontiguousarray(flipped[j0 : j0 + batch_size, None]))  # [b, 1, R', C']
            m, p = np.flip(m, axis=axis), (None if p is None else np.flip(p, axis=axis))  # the slices' own view
            for j in range(m.shape[0]):
                _on_input_grid(vi, m, p, j, threshold, out[j0 + j])
    pixel_cm2 = vi.spacing[1] * vi.spacing[2] / 100.0
    vi.looks = SecondLooks(
        picks,
        turned,
        mirrored_cm2=float(np.count_nonzero(mirrored)) * pixel_cm2 / n,
        found_cm2=float(np.count_nonzero(mask[picks])) * pixel_cm2 / n,
    )
    return time.perf_counter() - t


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


def _trim_tail(pred: np.ndarray, vi: VolumeInput, prep: Prep) -> tuple[np.ndarray, int]:
    """The anatomy rule's second step: the slices below the liver that are not liver-like (gray volumes: none)."""
    from liverseg.core.anatomy import TAIL_BAND_HU, trim_caudal_tail

    if vi.marks is None or not pred.any():  # no HU behind the gray slices: the band cannot be told
        return pred, 0
    band = TAIL_BAND_HU * 255.0 / (prep.window[1] - prep.window[0])
    out, n = trim_caudal_tail(pred, vi.gray, band)
    if n:
        ml = n * float(np.prod(vi.spacing)) / 1000.0
        vi.notes.append(f"anatomy: removed {ml:.0f} mL below the liver whose CT numbers are not the liver's")
    return out, n


def clean_volume(mask: np.ndarray, vi: VolumeInput, prep: Prep) -> tuple[np.ndarray, int]:
    """(the cleaned bool mask, voxels removed): the anatomy rule, the largest component, small blobs, as asked.

    The anatomy rule clears what it refuses in the model's ``mask`` itself (its callers have no other use for
    it). What the rule refused (or "no liver") goes into ``vi.notes``.
    """
    removed = 0
    pred = mask.view(bool)  # the model's mask is 0/1 uint8: a view, not a copy of the volume
    if prep.anatomy and pred.any():
        try:
            from liverseg.core.anatomy import on_the_left_mm, plausible_liver

            vi.left_mm = on_the_left_mm(pred, vi.marks, vi.spacing)
            pred, n, note = plausible_liver(pred, vi.spacing, vi.marks, in_place=True)
        except DataError as e:  # pragma: no cover - scipy is in the volumes extra
            vi.notes.append(f"anatomy check skipped: {e}")
        else:
            removed += n
            if note:
                vi.notes.append(note)
            pred, n = _trim_tail(pred, vi, prep)
            removed += n
    if prep.largest_component:
        from liverseg.core.cleanup import largest_component

        pred, n = largest_component(pred)
        removed += n
    if prep.min_blob > 1:
        from liverseg.core.cleanup import remove_small

        pred, n = remove_small(pred, prep.min_blob)
        removed += n
    return pred, removed


class VolumeWriter:
    """Writes one volume's files and returns its row (called from a write thread)."""

    def __init__(self, out: Path, prep: Prep, overlays: bool, software_version: str, store: Any = None) -> None:
        self.out, self.prep, self.overlays, self.version = out, prep, overlays, software_version
        self.store = store  # --store: a liverseg.infer.dicomweb.Store each DICOM-SEG is sent to

    def _put_png(self, name: str, arr: np.ndarray) -> list[Any]:
        return [name, write_bytes_atomic(self.out / name, encode_png(arr), fsync=False)]

    def write(self, row: Row, it: Any, vi: VolumeInput, mask: np.ndarray, prob: np.ndarray | None) -> Row:
        """Fill ``row`` (the per_image.csv base row of ``it``) with the volume's files, metrics and columns."""
        vol = vi.volume
        pred, removed = clean_volume(mask, vi, self.prep)
        flags = volume_flags(pred, vi.spacing, removed, vi.notes, vi.left_mm, vi.looks)
        vi.looks = None
        row["qc_flags"] = ";".join(flags)
        row.update(liver_statistics(pred, vi.hu, vi.spacing, flags, vol, vi.hu_offset))
        vi.hu = None  # the CT numbers are not needed any more
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
            from liverseg.core.dicom import write_seg

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
            from liverseg.core.metrics import scores

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
        from liverseg.core.metrics3d import volume_metrics, volume_ml

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
        from liverseg.core.overlay import overlay_rgb

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
        """overlays/<key>_viewer.json: what report.html's viewer carries of the volume (liverseg.core.viewer)."""
        from liverseg.core.viewer import payload_json, volume_payload

        payload = volume_payload(vi.gray, pred, vi.truth, vi.spacing, vi.volume)
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
    """statistics.json: the liver's statistics of every volume written (liverseg.core.qc), in input order."""
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
