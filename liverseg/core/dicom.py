"""DICOM CT series in, DICOM-SEG out: one folder becomes one :class:`~liverseg.core.volume.Volume`.

Reading (:func:`read_series`):

* The folder is walked recursively; every file is tried (with or without a ``.dcm``
  suffix) except hidden files and ``DICOMDIR``. Files without the DICM preamble are
  skipped and counted; a file *with* the preamble whose header cannot be parsed is an
  error (it may be a slice of the series). Files are grouped by SeriesInstanceUID.
* Exactly one image series, unless ``series_uid`` chooses one. Modality must be CT
  (an absent Modality is read as CT, with a note) unless ``allow_non_ct``.
* Slices are ordered by their position along the slice normal
  ``n = row_cos x col_cos`` (position ``= IPP . n``), ascending, never by file name or
  InstanceNumber. All slices must share ImageOrientationPatient (within
  :data:`IOP_TOL`), PixelSpacing (within :data:`SPACING_TOL_MM`), Rows and Columns.
  Two slices closer than :data:`DUPLICATE_TOL_MM` are duplicates (an error).
* Gaps: with ``m`` the median step between consecutive positions, a step above
  :data:`GAP_FACTOR` ``* m`` is a missing slice, any other step that differs from ``m``
  by more than :data:`UNEVEN_REL_TOL` ``* m`` is uneven spacing, and a slice origin that
  lies more than that tolerance off the line through the first and last origins is out
  of line. Each is an error naming the positions, unless ``allow_gaps``.
* Affine (LPS, then ``diag(-1, -1, 1)`` to RAS): ``pos(i, j, k) = IPP_0 + i * dc * row_cos
  + j * dr * col_cos + k * s`` with ``PixelSpacing = [dr, dc]`` and the slice step
  vector ``s = (IPP_last - IPP_0) / (K - 1)``. For an even series ``s = m * n`` and every
  slice lands on its own IPP; under ``allow_gaps`` the first and last slices land
  exactly and the note gives the largest measured offset of an in-between slice. A
  gantry-tilted series (``s`` not along ``n``) gets a sheared affine and a note.
* Voxels: RescaleSlope/Intercept applied per slice into one preallocated ``[K, R, C]``
  array (int16 when slope and intercept are integers and the values fit, else
  float32); ``Volume.data`` is its ``(C, R, K)`` transposed view. Compressed transfer
  syntaxes decode through pydicom's pixel backends (pylibjpeg plugins).
* Enhanced / legacy-converted multi-frame CT: one file; per-frame geometry from the
  functional groups, frames ordered and checked by the same rules.

Never are patient identifiers (name, ID, birth date, ...) put in ``meta``, ``notes`` or
an error message; the series' UIDs and description are.

Writing (:func:`write_seg`): a binary DICOM-SEG (highdicom) with one segment "Liver"
referencing the source series; :func:`read_seg_mask` reads one back aligned to the
volume's sorted slices. highdicom needs only the headers of the source images (no
pixel data), so ``Volume.source_datasets`` holds header-only datasets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.errors import DataError, describe
from liverseg.core.files import atomic_path
from liverseg.core.volume import MAX_PLAUSIBLE_MM, Volume, need, read_volume

__all__ = [
    "DUPLICATE_TOL_MM",
    "GAP_FACTOR",
    "IOP_TOL",
    "SPACING_TOL_MM",
    "UNEVEN_REL_TOL",
    "SeriesInfo",
    "find_series",
    "is_dicom_folder",
    "overlay_instance",
    "read_seg_mask",
    "read_series",
    "write_seg",
]

IOP_TOL = 1e-4  # direction cosines of every slice equal to the first slice's within this
SPACING_TOL_MM = 1e-4  # PixelSpacing of every slice equal to the first slice's within this
DUPLICATE_TOL_MM = 1e-3  # two slices closer than this along the normal are the same position
GAP_FACTOR = 1.5  # a step above GAP_FACTOR x median step is a missing slice
UNEVEN_REL_TOL = 0.10  # any other step (or off-line origin) deviating > 10 % of the median step is uneven
TILT_TOL = 1e-3  # |sin| of the angle between the slice step and the normal above which the affine is sheared
IS_DICOM_PROBE = 300  # is_dicom_folder looks at this many files at most
# Values larger than this (the pixel data) are left in the file when a header is scanned and
# read when the slice is decoded, so each file is parsed once: read_series of a 512x512x300
# series 0.69 -> 0.56 s (docs/performance.md, "Measured reasons in the code").
DEFER_BYTES = 16 * 1024

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "DOC", "RTPLAN", "RTRECORD", "REG", "FID", "PLAN"}
LIST_MAX = 6  # at most this many files / gaps / series named in one message

# Which package decodes which compressed transfer syntax (pydicom's own RLE decoder needs nothing).
_PLUGINS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE
}


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder: UID, modality, description (no patient data) and its files."""

    uid: str
    modality: str
    description: str
    files: list[str] = field(default_factory=list)
    is_image: bool = True

    @property
    def n_files(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        kind = "" if self.is_image else ", not an image series"
        return f"{self.uid} ({self.modality or 'no modality'}, {self.description!r}, {self.n_files} files{kind})"


@dataclass
class _Scan:
    series: list[SeriesInfo]
    headers: dict[str, Any]  # path -> header-only dataset
    n_files: int
    n_skipped: int
    broken: list[str]  # "path: why" for files with the DICM preamble whose header is unusable


def _pydicom() -> Any:
    return need("pydicom", "reading DICOM")


def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
    return out


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(folder: str | os.PathLike[str]) -> bool:
    """True when one of the first few hundred files under ``folder`` (recursive) has the DICM preamble."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for n, path in enumerate(_walk(folder)):
        if n >= IS_DICOM_PROBE:
            break
        if _has_preamble(path):
            return True
    return False


def _scan(folder: Path) -> _Scan:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    if not folder.exists():
        raise DataError(f"{folder}: DICOM folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a DICOM series folder")
    files = _walk(folder)
    headers: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    skipped = 0
    broken: list[str] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=False)
        except InvalidDicomError:
            skipped += 1
            continue
        except Exception as e:
            if _has_preamble(path):
                broken.append(f"{path}: DICOM header cannot be read (truncated or corrupt: {describe(e)})")
            else:
                skipped += 1
            continue
        key = str(ds.get("SeriesInstanceUID", "") or "")
        if not key or "SOPClassUID" not in ds:
            # every composite object has both; a file without them is cut short (or no image at all)
            broken.append(f"{path}: DICOM header without SOPClassUID/SeriesInstanceUID (truncated or corrupt)")
            continue
        headers[str(path)] = ds
        groups.setdefault(key, []).append(str(path))
    series = []
    for uid, paths in groups.items():
        first = headers[paths[0]]
        modality = str(first.get("Modality", "") or "")
        is_image = "Rows" in first and "Columns" in first and modality.upper() not in NON_IMAGE_MODALITIES
        series.append(SeriesInfo(uid, modality, str(first.get("SeriesDescription", "") or ""), paths, is_image))
    series.sort(key=lambda s: (-s.n_files, s.uid))
    return _Scan(series, headers, len(files), skipped, broken)


def find_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every DICOM series under ``folder`` (recursive; headers only), most files first.

    Files that are not DICOM, and DICOM files whose header is unusable, are left out
    (:func:`read_series` refuses a folder with the latter).
    """
    return _scan(Path(folder)).series


def _choose(folder: Path, scan: _Scan, series_uid: str | None) -> SeriesInfo:
    images = [s for s in scan.series if s.is_image]
    if series_uid is not None:
        for s in scan.series:
            if s.uid == series_uid:
                if not s.is_image:
                    raise DataError(f"{folder}: series {s.summary()} holds no images")
                return s
        listing = "; ".join(s.summary() for s in scan.series[:LIST_MAX]) or "none"
        raise DataError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found: {listing}")
    if not images:
        others = "; ".join(s.summary() for s in scan.series[:LIST_MAX])
        found = f"; non-image series: {others}" if others else ""
        raise DataError(
            f"{folder}: no DICOM image series found ({scan.n_files} files, {scan.n_skipped} not DICOM{found})"
        )
    if len(images) > 1:
        listing = "; ".join(s.summary() for s in images[:LIST_MAX])
        more = f"; and {len(images) - LIST_MAX} more" if len(images) > LIST_MAX else ""
        raise DataError(
            f"{folder}: holds {len(images)} image series; choose one with --series UID "
            f"(series_uid= in the Python API): {listing}{more}"
        )
    return images[0]


def _names(paths: list[str], folder: Path) -> str:
    def rel(p: str) -> str:
        try:
            return str(Path(p).relative_to(folder))
        except ValueError:
            return p

    shown = ", ".join(rel(p) for p in paths[:LIST_MAX])
    return shown + (f" and {len(paths) - LIST_MAX} more" if len(paths) > LIST_MAX else "")


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


@dataclass
class _Frame:
    """One slice: where its pixels come from and its geometry and rescale."""

    path: str
    frame: int  # 0 for single-frame files, else the frame index in the file
    ipp: np.ndarray
    iop: np.ndarray | None
    spacing: np.ndarray | None
    rows: int
    cols: int
    slope: float
    intercept: float
    thickness: float | None


def _rescale(item: Any) -> tuple[float, float]:
    slope = item.get("RescaleSlope", None)
    intercept = item.get("RescaleIntercept", None)
    return (1.0 if slope in (None, "") else float(slope)), (0.0 if intercept in (None, "") else float(intercept))


def _classic_frames(folder: Path, paths: list[str], headers: dict[str, Any]) -> list[_Frame]:
    missing = [p for p in paths if _floats(headers[p].get("ImagePositionPatient"), 3) is None]
    if missing:
        raise DataError(f"{folder}: no valid ImagePositionPatient in {_names(missing, folder)}")
    frames = []
    for p in paths:
        ds = headers[p]
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(
                f"{folder}: {_names([p], folder)} is a multi-frame file inside a series of {len(paths)} files"
            )
        slope, intercept = _rescale(ds)
        thick = ds.get("SliceThickness", None)
        frames.append(
            _Frame(
                p,
                0,
                _floats(ds.ImagePositionPatient, 3),  # type: ignore[arg-type]
                _floats(ds.get("ImageOrientationPatient"), 6),
                _floats(ds.get("PixelSpacing"), 2),
                int(ds.get("Rows", 0) or 0),
                int(ds.get("Columns", 0) or 0),
                slope,
                intercept,
                float(thick) if thick not in (None, "") else None,
            )
        )
    return frames


def _group_item(ds: Any, per_frame: Any, name: str) -> Any:
    """The first item of functional group ``name`` for one frame (per-frame, else shared), or None."""
    for holder in (per_frame, _first(ds.get("SharedFunctionalGroupsSequence"))):
        if holder is not None and name in holder and len(holder[name].value):
            return holder[name].value[0]
    return None


def _first(seq: Any) -> Any:
    return seq[0] if seq is not None and len(seq) else None


def _enhanced_frames(path: str, ds: Any) -> list[_Frame]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is None or len(per) != n:
        raise DataError(f"{path}: multi-frame file without a PerFrameFunctionalGroupsSequence of {n} items")
    frames = []
    for f in range(n):
        pos = _group_item(ds, per[f], "PlanePositionSequence")
        ori = _group_item(ds, per[f], "PlaneOrientationSequence")
        meas = _group_item(ds, per[f], "PixelMeasuresSequence")
        pvt = _group_item(ds, per[f], "PixelValueTransformationSequence")
        ipp = _floats(pos.get("ImagePositionPatient") if pos is not None else None, 3)
        if ipp is None:
            raise DataError(f"{path}: frame {f + 1} has no ImagePositionPatient (PlanePositionSequence)")
        slope, intercept = _rescale(pvt if pvt is not None else ds)
        thick = meas.get("SliceThickness", None) if meas is not None else None
        frames.append(
            _Frame(
                path,
                f,
                ipp,
                _floats(ori.get("ImageOrientationPatient") if ori is not None else None, 6),
                _floats(meas.get("PixelSpacing") if meas is not None else None, 2),
                int(ds.get("Rows", 0) or 0),
                int(ds.get("Columns", 0) or 0),
                slope,
                intercept,
                float(thick) if thick not in (None, "") else None,
            )
        )
    return frames


def _where(fr: _Frame, folder: Path) -> str:
    return f"frame {fr.frame + 1}" if fr.frame or fr.path == str(folder) else _names([fr.path], folder)


def _check_shared(folder: Path, frames: list[_Frame], notes: list[str]) -> tuple[np.ndarray, np.ndarray, bool]:
    """The series' IOP and (row, column) spacing after checking every slice agrees; spacing trusted?"""
    ref = frames[0]
    if ref.iop is None:
        raise DataError(f"{folder}: no valid ImageOrientationPatient in {_where(ref, folder)}")
    bad = [f for f in frames if f.iop is None or np.max(np.abs(f.iop - ref.iop)) > IOP_TOL]
    if bad:
        raise DataError(
            f"{folder}: ImageOrientationPatient differs from {_where(ref, folder)}'s {list(ref.iop)} in "
            f"{', '.join(_where(f, folder) for f in bad[:LIST_MAX])}"
        )
    bad = [f for f in frames if (f.rows, f.cols) != (ref.rows, ref.cols)]
    if bad:
        raise DataError(
            f"{folder}: image size differs from {_where(ref, folder)}'s {ref.rows}x{ref.cols} in "
            f"{', '.join(f'{_where(f, folder)} ({f.rows}x{f.cols})' for f in bad[:LIST_MAX])}"
        )
    if ref.rows <= 0 or ref.cols <= 0:
        raise DataError(f"{folder}: {_where(ref, folder)} has no Rows/Columns")

    def sp(f: _Frame) -> np.ndarray:
        return f.spacing if f.spacing is not None else np.full(2, np.nan)

    bad = [f for f in frames if not np.allclose(sp(f), sp(ref), atol=SPACING_TOL_MM, rtol=0, equal_nan=True)]
    if bad:
        raise DataError(
            f"{folder}: PixelSpacing differs from {_where(ref, folder)}'s {ref.spacing} in "
            f"{', '.join(f'{_where(f, folder)} ({f.spacing})' for f in bad[:LIST_MAX])}"
        )
    trusted = True
    spacing = ref.spacing
    if spacing is None:
        notes.append("spacing not trusted: no PixelSpacing in the headers; 1 mm pixels assumed")
        spacing, trusted = np.ones(2), False
    elif np.any(spacing <= 0):
        notes.append(f"spacing not trusted: PixelSpacing is {list(spacing)}; 1 mm pixels assumed")
        spacing, trusted = np.ones(2), False
    elif np.max(spacing) > MAX_PLAUSIBLE_MM:
        notes.append(f"spacing not trusted: PixelSpacing {list(spacing)} mm is implausible for CT")
        trusted = False
    row_cos, col_cos = ref.iop[:3], ref.iop[3:]
    if (
        abs(np.linalg.norm(row_cos) - 1) > 1e-3
        or abs(np.linalg.norm(col_cos) - 1) > 1e-3
        or abs(row_cos @ col_cos) > 1e-3
    ):
        raise DataError(f"{folder}: ImageOrientationPatient {list(ref.iop)} is not two orthogonal unit vectors")
    return ref.iop, spacing, trusted


def _order_and_step(
    folder: Path, frames: list[_Frame], iop: np.ndarray, allow_gaps: bool, notes: list[str]
) -> tuple[list[int], np.ndarray]:
    """Indices of ``frames`` in ascending position along the normal and the slice step vector (LPS mm)."""
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    pos = np.array([f.ipp @ normal for f in frames])
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    z = pos[order]
    if len(frames) == 1:
        thick = frames[0].thickness
        step = thick if thick and thick > 0 else 1.0
        notes.append(f"a single slice: slice thickness {step:g} mm used as the slice spacing")
        return order, step * normal
    dup = [(a, b) for a, b in zip(order[:-1], order[1:]) if abs(pos[b] - pos[a]) < DUPLICATE_TOL_MM]
    if dup:
        shown = "; ".join(
            f"{_where(frames[a], folder)} and {_where(frames[b], folder)} at {pos[a]:.3f} mm" for a, b in dup
        )
        raise DataError(f"{folder}: {len(dup)} duplicate slice position(s) along the slice normal: {shown}")
    steps = np.diff(z)
    m = float(np.median(steps))
    ipps = np.array([frames[i].ipp for i in order])
    k_n = len(order)
    step_vec = (ipps[-1] - ipps[0]) / (k_n - 1)
    problems = []
    for k, s in enumerate(steps):
        if s > GAP_FACTOR * m:
            missing = max(1, round(s / m) - 1)
            problems.append(
                f"missing slice(s) (about {missing}) between {z[k]:.2f} and {z[k + 1]:.2f} mm (step {s:.2f})"
            )
        elif abs(s - m) > UNEVEN_REL_TOL * m:
            problems.append(f"uneven step {s:.2f} mm between {z[k]:.2f} and {z[k + 1]:.2f} mm")
    line = ipps[0][None, :] + np.arange(k_n)[:, None] * step_vec[None, :]
    off = ipps - line
    lateral = np.linalg.norm(off - (off @ normal)[:, None] * normal[None, :], axis=1)
    bad_line = np.flatnonzero(lateral > UNEVEN_REL_TOL * m)
    if len(bad_line):
        k = int(bad_line[np.argmax(lateral[bad_line])])
        problems.append(
            f"{len(bad_line)} slice origin(s) off the line from the first to the last slice, up to "
            f"{lateral[k]:.2f} mm at {z[k]:.2f} mm"
        )
    if problems:
        shown = "; ".join(problems[:LIST_MAX]) + (
            f"; and {len(problems) - LIST_MAX} more" if len(problems) > LIST_MAX else ""
        )
        where = f"positions along the slice normal, median step {m:.3f} mm"
        if not allow_gaps:
            raise DataError(
                f"{folder}: slice spacing is irregular ({where}): {shown}; pass allow_gaps to read it anyway "
                "(e.g. --allow-gaps)"
            )
        worst = float(np.max(np.linalg.norm(off, axis=1)))
        notes.append(
            f"irregular slice spacing tolerated (allow_gaps; {where}): {shown}. The affine uses the mean step "
            f"(last - first) / (K - 1) = {np.linalg.norm(step_vec):.3f} mm, so the first and last slices lie at their "
            f"true positions; in-between slices are off by up to {worst:.2f} mm"
        )
    sin_tilt = float(np.linalg.norm(np.cross(step_vec / np.linalg.norm(step_vec), normal)))
    if sin_tilt > TILT_TOL:
        notes.append(
            f"slices are stacked {np.degrees(np.arcsin(min(sin_tilt, 1.0))):.2f} degrees off the slice normal "
            "(gantry tilt): the affine is sheared so every slice lies at its own position"
        )
    return order, step_vec


def _target_dtype(frames: list[_Frame]) -> Any:
    integral = all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)
    return np.int16 if integral else np.float32


def _decode_error(path: str, ts: Any, e: BaseException) -> DataError:
    plugin = _PLUGINS.get(str(ts))
    name = getattr(ts, "name", str(ts)) or str(ts)
    if plugin is not None:
        return DataError(
            f"{path}: pixel data ({name}) cannot be decoded ({describe(e)}); the decoder comes from "
            f"{plugin} (pip install {plugin.split(' ')[0]}) - or the file is corrupt"
        )
    return DataError(f"{path}: pixel data ({name}) cannot be read (truncated or corrupt: {describe(e)})")


class _Filler:
    """Writes rescaled slices into one preallocated [K, R, C] array; widens int16 to float32 if needed."""

    def __init__(self, shape: tuple[int, int, int], dtype: Any, notes: list[str]) -> None:
        self.stack = np.empty(shape, dtype=dtype)
        self.notes = notes

    def put(self, k: int, raw: np.ndarray, slope: float, intercept: float) -> None:
        if self.stack.dtype == np.int16 and slope == 1 and raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2:
            # The usual CT slice: HU = stored + intercept. The range is known from the stored one, and
            # 16-bit arithmetic that wraps gives the exact result whenever that result fits in int16,
            # so no int32 copy of the slice is needed (9 -> 1 ms per 512x512 slice).
            lo, hi = int(raw.min()) + int(intercept), int(raw.max()) + int(intercept)
            if -32768 <= lo and hi <= 32767:
                out = self.stack[k]
                out[...] = raw.view(np.int16) if raw.dtype == np.uint16 else raw
                if intercept:
                    out += np.int16((int(intercept) + 32768) % 65536 - 32768)
                return
        if self.stack.dtype == np.int16:
            v = raw.astype(np.int32)
            if slope != 1:
                v *= int(slope)
            if intercept:
                v += int(intercept)
            lo, hi = int(v.min()), int(v.max())
            if lo < -32768 or hi > 32767:
                self.notes.append(f"CT numbers reach [{lo}, {hi}], beyond int16: stored as float32")
                self.stack = self.stack.astype(np.float32)
            else:
                self.stack[k] = v
                return
        self.stack[k] = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _decode_classic(frames: list[_Frame], order: list[int], filler: _Filler, headers: dict[str, Any]) -> None:
    """Each slice's pixels into ``filler``, from the dataset its header was scanned into (its pixel data,
    deferred then, is read now and dropped after, so the datasets stay header-only)."""
    from pydicom.pixels import pixel_array

    for k, idx in enumerate(order):
        fr = frames[idx]
        ds = headers[fr.path]
        ts: Any = "unknown transfer syntax"
        try:
            ts = ds.file_meta.get("TransferSyntaxUID", ts)
            if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
                raise DataError(f"{fr.path}: has {ds.SamplesPerPixel} samples per pixel (colour), not CT numbers")
            if "PixelData" not in ds:
                raise DataError(f"{fr.path}: has no pixel data")
            raw = pixel_array(ds)
        except DataError:
            raise
        except Exception as e:
            raise _decode_error(fr.path, ts, e) from None
        finally:
            _drop_pixels(ds)
        if raw.shape != filler.stack.shape[1:]:
            raise DataError(f"{fr.path}: pixel data has shape {raw.shape}, the header says {filler.stack.shape[1:]}")
        filler.put(k, raw, fr.slope, fr.intercept)
        del raw


def _drop_pixels(ds: Any) -> None:
    """Remove the pixel data (read or still deferred) from a dataset kept for its header."""
    if "PixelData" in ds:
        del ds.PixelData


def _decode_enhanced(path: str, ts: Any, frames: list[_Frame], order: list[int], filler: _Filler) -> None:
    from pydicom.pixels import iter_pixels

    rank = {idx: k for k, idx in enumerate(order)}
    f = -1
    try:
        for f, raw in enumerate(iter_pixels(path)):
            if raw.shape != filler.stack.shape[1:]:
                raise DataError(
                    f"{path}: frame {f + 1} has shape {raw.shape}, the header says {filler.stack.shape[1:]}"
                )
            filler.put(rank[f], raw, frames[f].slope, frames[f].intercept)
    except DataError:
        raise
    except Exception as e:
        raise _decode_error(path, ts, e) from None
    if f + 1 != len(frames):
        raise DataError(f"{path}: holds {f + 1} frames of pixel data, the header says {len(frames)}")


def read_scan(path: str | os.PathLike[str], series: str | None = None, *, allow_gaps: bool = False) -> Volume:
    """A volume file (:func:`liverseg.core.volume.read_volume`), or a DICOM series folder (``series``: its
    SeriesInstanceUID where the folder holds several)."""
    if os.path.isdir(path):
        return read_series(path, series, allow_gaps=allow_gaps)
    return read_volume(path)


def read_series(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    *,
    allow_gaps: bool = False,
    allow_non_ct: bool = False,
) -> Volume:
    """The one CT image series under ``folder`` (or the one ``series_uid`` names) as a :class:`Volume`.

    Rules (ordering, tolerances, gaps, affine) are in the module docstring.
    """
    folder = Path(folder)
    scan = _scan(folder)
    if scan.broken:
        more = f" (and {len(scan.broken) - 1} more such files)" if len(scan.broken) > 1 else ""
        raise DataError(scan.broken[0] + more)
    info = _choose(folder, scan, series_uid)
    notes: list[str] = []
    if scan.n_skipped:
        notes.append(f"{scan.n_skipped} file(s) that are not DICOM ignored")
    others = [s for s in scan.series if s is not info]
    if others:
        notes.append(f"{len(others)} other series in the folder ignored: {'; '.join(s.summary() for s in others[:3])}")
    headers = [scan.headers[p] for p in info.files]
    first = headers[0]
    modality = info.modality
    if not modality:
        notes.append("no Modality in the headers: read as CT")
    elif modality.upper() != "CT":
        if not allow_non_ct:
            raise DataError(
                f"{folder}: series {info.uid} is {modality}, not CT (liverseg's model is trained on CT; "
                "pass allow_non_ct to read it anyway)"
            )
        notes.append(f"modality is {modality}, not CT: read because allow_non_ct was given")
    n_frames = int(first.get("NumberOfFrames", 1) or 1)
    enhanced = n_frames > 1 or str(first.get("SOPClassUID", "")) in (ENHANCED_CT, LEGACY_CONVERTED_CT)
    if enhanced:
        if len(info.files) != 1:
            raise DataError(
                f"{folder}: series {info.uid} mixes {len(info.files)} files with multi-frame ones "
                f"({_names(info.files, folder)}); liverseg reads one enhanced multi-frame file per series"
            )
        frames = _enhanced_frames(info.files[0], first)
        loc = Path(info.files[0])
    else:
        frames = _classic_frames(folder, info.files, scan.headers)
        loc = folder
    iop, spacing, trusted = _check_shared(loc, frames, notes)
    order, step_vec = _order_and_step(loc, frames, iop, allow_gaps, notes)
    ref = frames[order[0]]
    rows, cols = ref.rows, ref.cols
    rescales = {(f.slope, f.intercept) for f in frames}
    if len(rescales) > 1:
        notes.append(f"rescale differs between slices ({len(rescales)} pairs): applied per slice")
    if "RescaleIntercept" not in first and not enhanced:
        notes.append("no RescaleSlope/RescaleIntercept: stored values taken as CT numbers")
    filler = _Filler((len(frames), rows, cols), _target_dtype(frames), notes)
    file_meta = getattr(first, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID", None) if file_meta is not None else None
    if enhanced:
        _decode_enhanced(info.files[0], ts, frames, order, filler)
        _drop_pixels(first)
    else:
        _decode_classic(frames, order, filler, scan.headers)
    stack = filler.stack

    row_cos, col_cos = iop[:3], iop[3:]
    lps = np.eye(4)
    lps[:3, 0] = spacing[1] * row_cos  # i: columns, PixelSpacing[1] apart, along the row direction
    lps[:3, 1] = spacing[0] * col_cos  # j: rows, PixelSpacing[0] apart, along the column direction
    lps[:3, 2] = step_vec  # k: slices in ascending position along the normal
    lps[:3, 3] = ref.ipp
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS

    thickness = ref.thickness
    meta: dict[str, Any] = {
        "modality": modality or None,
        "series_instance_uid": info.uid,
        "study_instance_uid": str(first.get("StudyInstanceUID", "") or "") or None,
        "series_description": info.description,
        "sop_class_uid": str(first.get("SOPClassUID", "") or "") or None,
        "transfer_syntax": getattr(ts, "name", None) or (str(ts) if ts else None),
        "n_files": info.n_files,
        "n_slices": len(frames),
        "enhanced_multiframe": enhanced,
        "manufacturer": str(first.get("Manufacturer", "") or "") or None,
        "slice_thickness_mm": thickness,
        "slice_spacing_mm": float(np.linalg.norm(step_vec)),
        "rescale": [ref.slope, ref.intercept],
    }
    source = [first] if enhanced else [scan.headers[frames[i].path] for i in order]
    return Volume(
        stack.transpose(2, 1, 0),
        affine,
        str(folder),
        "dicom",
        meta=meta,
        notes=notes,
        spacing_trusted=trusted,
        source_datasets=source,
    )


def _enhanced_order(ds: Any) -> list[int]:
    """Frame indices of an enhanced multi-frame dataset in ascending position along the normal."""
    frames = _enhanced_frames("source", ds)
    iop = frames[0].iop if frames[0].iop is not None else np.array([1.0, 0, 0, 0, 1, 0])
    normal = np.cross(iop[:3], iop[3:])
    return [int(i) for i in np.argsort([f.ipp @ normal for f in frames], kind="stable")]


def _is_enhanced(volume: Volume) -> bool:
    ds = (volume.source_datasets or [None])[0]
    return ds is not None and len(volume.source_datasets or []) == 1 and int(ds.get("NumberOfFrames", 1) or 1) > 1


def write_seg(
    volume: Volume,
    mask_axial_source_order: np.ndarray,
    path: str | os.PathLike[str],
    *,
    software_version: str,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> None:
    """Write a binary DICOM-SEG (segment 1, "Liver") for ``volume``'s series to ``path``, atomically.

    Its series and SOP instance UIDs are new ones unless given (a store that must
    recognise a SEG it already holds gives the same ones again).

    ``mask_axial_source_order`` is [K, R, C] in the series' sorted slice order (the
    layout of ``volume.data.transpose(2, 1, 0)``), liver = nonzero. Empty frames are
    omitted (an all-empty mask keeps every frame, as DICOM needs at least one).
    """
    hd = need("highdicom", "writing DICOM-SEG")
    from pydicom.sr.codedict import codes

    if not volume.source_datasets:
        raise DataError(f"{path}: DICOM-SEG output needs a DICOM source series; {volume.source} is {volume.kind}")
    mask = np.asarray(mask_axial_source_order)
    expected = tuple(volume.data.shape[::-1])
    if mask.shape != expected:
        raise DataError(f"{path}: mask has shape {mask.shape}, the series' [slice, row, column] shape is {expected}")
    pixels = (mask != 0).astype(np.uint8)
    if _is_enhanced(volume):
        order = _enhanced_order(volume.source_datasets[0])
        frames = np.empty_like(pixels)
        frames[order] = pixels  # frame order[k] of the source is sorted slice k
        pixels = frames
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="liverseg", version=software_version, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    uids = (series_instance_uid or hd.UID(), sop_instance_uid or hd.UID())
    with _identifiers_withheld(volume):
        _build_and_save_seg(hd, volume, pixels, description, software_version, Path(path), uids)


IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")
WITHHELD = "[identifier withheld]"


def _identifier_values(volume: Volume) -> list[str]:
    """The patient identifiers of a series' first header, longest first (what no message may carry)."""
    ds = (volume.source_datasets or [None])[0]
    values = set()
    for keyword in IDENTIFIER_KEYWORDS:
        v = str(getattr(ds, keyword, "") or "").strip() if ds is not None else ""
        if len(v) >= 2:
            values.add(v)
            values.update(p for p in v.replace("^", " ").split() if len(p) >= 3)  # the name's components too
    return sorted(values, key=len, reverse=True)


def withhold(text: str, values: list[str]) -> str:
    """``text`` with every value of ``values`` replaced by :data:`WITHHELD`."""
    for v in values:
        text = text.replace(v, WITHHELD)
    return text


@contextlib.contextmanager
def _identifiers_withheld(volume: Volume) -> Iterator[None]:
    """Third-party warnings and log records raised inside, re-said without the series' patient identifiers.

    highdicom warns about a PatientName that does not follow DICOM's format and quotes it
    ("The string "Doe John" is unlikely to represent the intended person name..."); the
    README and docs/inference-and-volumes.md promise that no identifier reaches a log. Warnings are caught and re-issued
    through the ``liverseg`` logger with the identifiers replaced; highdicom's and pydicom's
    log records are rewritten the same way.
    """
    values = _identifier_values(volume)

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = withhold(record.getMessage(), values), None
            return True

    filt = _Filter()
    loggers = [logging.getLogger(name) for name in ("highdicom", "pydicom")]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)
    for w in caught:
        logging.getLogger("liverseg").warning("%s: %s", w.category.__name__, withhold(str(w.message), values))


def _orientation(cosines: np.ndarray) -> str:
    """The patient direction (L/R, P/A, H/F) a direction cosine vector mostly points to."""
    axis = int(np.argmax(np.abs(cosines)))
    return ("LR", "PA", "HF")[axis][0 if cosines[axis] > 0 else 1]


def overlay_instance(
    volume: Volume,
    k: int,
    rgb: np.ndarray,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    software_version: str,
) -> Any:
    """A DICOM Secondary Capture image of sorted slice ``k`` of ``volume``'s series showing ``rgb``.

    ``rgb`` is uint8 [R, C, 3] on the slice's own pixel grid (the source's rows and columns):
    a burned-in overlay for viewers that cannot show DICOM-SEG. Patient, study and the
    slice's pixel spacing and orientation come from the source header; instance number k + 1.
    """
    hd = need("highdicom", "writing a Secondary Capture overlay")
    if not volume.source_datasets or _is_enhanced(volume):
        raise DataError(f"{volume.source}: an overlay series needs a single-frame DICOM source series")
    ref = volume.source_datasets[k]
    iop = np.asarray([float(v) for v in ref.ImageOrientationPatient])
    spacing = tuple(float(v) for v in ref.PixelSpacing)
    values = _identifier_values(volume)
    with _identifiers_withheld(volume):
        try:
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=ref,
                pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=series_instance_uid,
                series_number=901,
                sop_instance_uid=sop_instance_uid,
                instance_number=k + 1,
                manufacturer="liverseg",
                pixel_spacing=spacing,
                patient_orientation=(_orientation(iop[:3]), _orientation(iop[3:])),
                transfer_syntax_uid="1.2.840.10008.1.2.1",
            )
        except Exception as e:
            why = withhold(describe(e), values)
            raise DataError(f"{volume.source}: overlay slice {k} cannot be built ({why})") from None
    sc.SeriesDescription = "liverseg liver overlay"
    sc.SoftwareVersions = software_version or "unknown"
    sc.BurnedInAnnotation = "YES"
    return sc


def _build_and_save_seg(
    hd: Any,
    volume: Volume,
    pixels: np.ndarray,
    description: Any,
    software_version: str,
    path: Path,
    uids: tuple[str, str],
) -> None:
    values = _identifier_values(volume)
    try:
        seg = hd.seg.Segmentation(
            source_images=volume.source_datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=uids[0],
            series_number=900,
            sop_instance_uid=uids[1],
            instance_number=1,
            manufacturer="liverseg",
            manufacturer_model_name="liverseg",
            software_versions=software_version,
            device_serial_number="none",
            series_description="liverseg liver",
            omit_empty_frames=True,
        )
    except Exception as e:
        why = withhold(describe(e), values)
        raise DataError(f"{path}: DICOM-SEG cannot be built for {volume.source} ({why})") from None
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)


def read_seg_mask(path: str | os.PathLike[str], volume: Volume) -> np.ndarray:
    """A DICOM-SEG's segment 1 as a [K, R, C] bool array aligned to ``volume``'s sorted slices."""
    hd = need("highdicom", "reading DICOM-SEG")
    if not volume.source_datasets:
        raise DataError(f"{path}: reading a DICOM-SEG needs the DICOM source series; {volume.source} is {volume.kind}")
    try:
        seg = hd.seg.segread(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable DICOM-SEG ({describe(e)})") from None
    try:
        if _is_enhanced(volume):
            src = volume.source_datasets[0]
            n = int(src.NumberOfFrames)
            px = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=src.SOPInstanceUID,
                source_frame_numbers=list(range(1, n + 1)),
                segment_numbers=[1],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
            )
            px = px[_enhanced_order(src)]
        else:
            px = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in volume.source_datasets],
                segment_numbers=[1],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
            )
    except Exception as e:
        raise DataError(f"{path}: DICOM-SEG does not match the series of {volume.source} ({describe(e)})") from None
    return np.asarray(px) != 0
