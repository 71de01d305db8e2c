"""CT volumes: one in-memory form for NIfTI, NRRD, MetaImage and DICOM series.

A :class:`Volume` keeps the voxels in the file's own array order (``data[i, j, k]``,
nibabel's convention) with the RAS+ affine that maps ``(i, j, k)`` to millimetres in
patient space. Readers (:func:`read_volume`, :mod:`liverseg.core.dicom`) only fill it;
:meth:`Volume.axial` gives the slices the model sees and :meth:`Volume.from_axial`
puts a result back in the file's order, so a mask is written with the input's shape
and affine.

The model's view (:data:`MODEL_AXCODES`): axial slices in radiological view, as the
PNG sets of this project and a standard axial DICOM slice are stored: image rows run
anterior -> posterior (anterior at the top), columns patient right -> left (the
patient's right on the viewer's left), slices inferior -> superior. In nibabel terms
the array is reoriented to axis codes ``("L", "P", "S")`` and then read as
``[k, j, i]`` = ``[slice, row, column]``.

An identity affine gives no orientation either: the array is then read in DICOM
order (:attr:`Volume.view_affine`), said in ``notes``.

Spacing: a header whose voxel sizes cannot be trusted (an identity affine, a zero, a
NaN, or an in-plane size above :data:`MAX_PLAUSIBLE_MM`) is kept as it is, and
``spacing_trusted`` is False with the reason in ``notes``; the runner then states the
assumption it makes (see :func:`liverseg.core.volume.spacing_problem`).

Readers of formats beyond NIfTI need the ``volumes`` extra (``pip install
'liverseg[volumes]'``); a missing library is a :class:`~liverseg.core.errors.DataError`
that says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.errors import DataError, describe
from liverseg.core.files import atomic_path

__all__ = [
    "MAX_PLAUSIBLE_MM",
    "MODEL_AXCODES",
    "VOLUME_SUFFIXES",
    "Volume",
    "is_volume_path",
    "need",
    "read_volume",
    "spacing_problem",
    "write_nifti",
]

MODEL_AXCODES = ("L", "P", "S")
MAX_PLAUSIBLE_MM = 10.0  # an in-plane voxel larger than this is not a CT header to trust
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")
EXTRA_HINT = "pip install 'liverseg[volumes]'"


def need(module: str, what: str) -> Any:
    """Import ``module`` or raise a DataError saying which extra provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what} needs the Python package {module!r}: {EXTRA_HINT}") from None


def is_volume_path(path: str | os.PathLike[str]) -> bool:
    """True for a file name with a volume suffix (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ...)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def spacing_problem(affine: np.ndarray) -> str | None:
    """Why the voxel sizes of ``affine`` cannot be trusted, or None when they can."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return "the header's affine holds NaN or infinite values"
    if np.allclose(a, np.eye(4)):
        return "the header has an identity affine (1 mm voxels written by a tool that did not know the spacing)"
    zooms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms <= 1e-6):
        return f"the header gives a zero voxel size ({', '.join(f'{z:g}' for z in zooms)} mm)"
    return None


@dataclass
class Volume:
    """Voxels in the file's own order, the RAS+ affine, and what is known about them.

    ``data``: [I, J, K] CT numbers (int16/float32 HU after any rescale) or a mask.
    ``affine``: 4x4 RAS+ (nibabel), voxel index -> mm.
    ``kind``: "nifti", "nrrd", "metaimage", "mrc" or "dicom". ``meta``: facts for the summary
    (modality, series UID, transfer syntax, ...), never patient identifiers.
    ``notes``: what a reader had to assume or tolerate, said in the log and recorded.
    ``spacing_trusted``: False when the header's voxel sizes are implausible.
    ``source_datasets``: for DICOM, the series' headers (no pixel data) in slice order,
    for DICOM-SEG output; None otherwise.
    """

    data: np.ndarray
    affine: np.ndarray
    source: str
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    spacing_trusted: bool = True
    source_datasets: list[Any] | None = None
    view_affine: np.ndarray | None = None  # the affine that orients the data when the header's cannot (see notes)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise DataError(f"{self.source}: expected a 3D volume, got {self.data.ndim}D with shape {self.data.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along the file's axes i, j, k."""
        z = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(z[0]), float(z[1]), float(z[2])

    def _ornt(self) -> np.ndarray:
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

        return ornt_transform(io_orientation(self._orienting_affine()), axcodes2ornt(MODEL_AXCODES))

    def _orienting_affine(self) -> np.ndarray:
        return self.affine if self.view_affine is None else self.view_affine

    def axial(self) -> np.ndarray:
        """[K, R, C] axial slices in the model's view (a view of ``data`` when no flip is needed)."""
        from nibabel.orientations import apply_orientation

        return apply_orientation(self.data, self._ornt()).transpose(2, 1, 0)

    def axial_spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm of :meth:`axial`'s array."""
        ornt = self._ornt()
        z = self.zooms
        # ornt[a] = (target axis, flip) for source axis a; the target axes are (L, P, S) = (col, row, slice)
        by_target = {int(t): z[a] for a, (t, _) in enumerate(ornt)}
        return by_target[2], by_target[1], by_target[0]

    def from_axial(self, arr: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        """Inverse of :meth:`axial`: a [K, R, C] array back in the file's [I, J, K] order.

        ``contiguous=False`` returns a view of ``arr`` where no flip or axis swap needs a
        copy: the transposed C-ordered axial array is the Fortran order NIfTI stores, so
        :func:`write_nifti` streams it as it is (a 300x512x512 mask: 0.1 s instead of 0.9 s
        for the C-ordered copy plus nibabel's transpose back).
        """
        from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

        back = ornt_transform(axcodes2ornt(MODEL_AXCODES), io_orientation(self._orienting_affine()))
        out = apply_orientation(arr.transpose(2, 1, 0), back)
        return np.ascontiguousarray(out) if contiguous else out


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """A NIfTI, NRRD or MetaImage file as a :class:`Volume` (DICOM: :func:`liverseg.core.dicom.read_series`)."""
    path = Path(path)
    _check_file(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(path)
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return _read_itk(path)
    if name.endswith(".mrc"):
        return _read_mrc(path)
    raise DataError(f"{path}: not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: volume file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a volume file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: volume file is empty (0 bytes)")


def _squeeze_to_3d(arr: Any, path: Path) -> Any:
    """Drop trailing length-1 axes (a 4D file with one volume); refuse true 4D or 2D data."""
    shape = tuple(arr.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise DataError(
            f"{path}: is {len(shape)}D with shape {tuple(arr.shape)} (a time series or several channels); "
            "liverseg reads one 3D CT volume per file"
        )
    if len(shape) < 3:
        raise DataError(f"{path}: is {len(shape)}D with shape {tuple(arr.shape)}, not a 3D volume")
    return shape


def _gzip_ng_data(img: Any, path: Path) -> np.ndarray | None:
    """The voxels of a ``.nii.gz`` inflated by zlib-ng, or None to read them nibabel's way.

    nibabel inflates with the standard library's zlib: 0.47 s for a 512x512x300 int16 CT
    (19 MB compressed) against 0.33 s through zlib-ng (2-vCPU AMD EPYC). The image is
    re-made from the same header on the zlib-ng stream, so nibabel's own array proxy
    applies the header's scaling exactly as before; anything unusual (zlib-ng missing, a
    truncated file) returns None and the file is read, or refused, the usual way.
    """
    if not str(path).lower().endswith(".gz"):
        return None
    try:
        import nibabel as nib
        from zlib_ng import gzip_ng
    except ImportError:  # pragma: no cover - zlib-ng is a base dependency
        return None
    try:
        with gzip_ng.open(path, "rb") as gz:
            held = nib.FileHolder(filename=str(path), fileobj=gz)
            data: np.ndarray = np.asanyarray(type(img).from_file_map({"header": held, "image": held}).dataobj)
            return data
    except Exception:
        return None


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a readable NIfTI file ({describe(e)})") from None
    shape = _squeeze_to_3d(img, path)
    data = _gzip_ng_data(img, path)
    if data is None:
        try:
            data = np.asanyarray(img.dataobj)  # keeps int16 when the header has no scaling
        except Exception as e:  # a truncated .nii.gz ends in EOFError or zlib.error
            raise DataError(f"{path}: NIfTI data cannot be read (truncated or corrupt: {describe(e)})") from None
    data = np.asarray(data).reshape(shape)
    if data.dtype.kind == "c" or data.dtype.names:
        raise DataError(f"{path}: holds {data.dtype} voxels (RGB or complex), not CT numbers")
    affine = np.asarray(img.affine, dtype=np.float64)
    code = int(img.header.get("sform_code", 0) or 0) or int(img.header.get("qform_code", 0) or 0)
    vol = Volume(data, affine, str(path), "nifti", meta={"format": "NIfTI", "xform_code": code})
    _trust_spacing(vol)
    return vol


def _read_itk(path: Path) -> Volume:
    sitk = need("SimpleITK", f"{path}: reading {path.suffix} files")
    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a readable {path.suffix} file ({describe(e)})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components per voxel, not CT numbers")
    if img.GetDimension() != 3:
        size = tuple(img.GetSize())
        if img.GetDimension() == 4 and size[3] == 1:
            img = img[:, :, :, 0]
        else:
            raise DataError(f"{path}: is {img.GetDimension()}D with size {size}; liverseg reads one 3D CT volume")
    try:
        zyx = sitk.GetArrayViewFromImage(img)
    except Exception as e:
        raise DataError(f"{path}: voxel data cannot be read ({describe(e)})") from None
    data = np.array(zyx).transpose(2, 1, 0)  # ITK's [z, y, x] -> (i, j, k)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    lps[:3, 3] = img.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK is LPS, nibabel RAS
    kind = "nrrd" if path.suffix.lower() in (".nrrd", ".nhdr") else "metaimage"
    meta: dict[str, Any] = {"format": "NRRD" if kind == "nrrd" else "MetaImage"}
    for key in ("Modality", "modality"):
        if img.HasMetaDataKey(key):
            mod = img.GetMetaData(key).removeprefix("MET_MOD_")  # MetaImage writes MET_MOD_CT, MET_MOD_MR, ...
            if mod and mod.upper() not in ("UNKNOWN", "OTHER"):
                meta["modality"] = mod
    vol = Volume(data, affine, str(path), kind, meta=meta)
    _trust_spacing(vol)
    return vol


def _read_mrc(path: Path) -> Volume:
    """An MRC file as the one public CT in that format stores it (LiTS 117 in liver-ct-segmentation-package).

    MRC is a cryo-EM format; that package wrote its CT arrays in NIfTI axis order (i, j, k;
    axial slices along the last axis) and left the voxel size 0. So the array is taken in
    its stored order; a voxel size in the header (MRC's x, y, z) is used when it is a
    plausible CT size in mm, else the spacing is untrusted and said so, as for an identity
    affine in NIfTI.
    """
    mrcfile = need("mrcfile", f"{path}: reading .mrc files")
    try:
        with mrcfile.open(str(path), mode="r", permissive=True) as m:
            if m.data is None:
                raise DataError(f"{path}: MRC file holds no data (bad header)")
            data = np.array(m.data)
            size = m.voxel_size
            zooms = [float(size.x), float(size.y), float(size.z)]
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable MRC file ({describe(e)})") from None
    shape = _squeeze_to_3d(data, path)
    data = data.reshape(shape)
    if data.dtype.kind not in "iuf":
        raise DataError(f"{path}: holds {data.dtype} voxels, not CT numbers")
    plausible = all(0.05 <= z <= MAX_PLAUSIBLE_MM for z in zooms)
    affine = np.diag([*zooms, 1.0]) if plausible else np.eye(4)
    vol = Volume(data, affine, str(path), "mrc", meta={"format": "MRC", "header_voxel_size": zooms})
    if not plausible:
        vol.notes.append(f"the MRC header's voxel size {tuple(zooms)} is not a CT size in mm")
    _trust_spacing(vol)
    return vol


def _trust_spacing(vol: Volume) -> None:
    problem = spacing_problem(vol.affine)
    if problem is None:
        row, col = vol.axial_spacing()[1:]
        if max(row, col) > MAX_PLAUSIBLE_MM:
            problem = f"the header gives {col:g} x {row:g} mm pixels, implausible for CT"
    if problem:
        vol.spacing_trusted = False
        vol.notes.append(f"spacing not trusted: {problem}")
    if np.allclose(vol.affine, np.eye(4)):
        # An identity affine says nothing about orientation either. Tools that drop the
        # header mostly write the array in DICOM/ITK order (i: columns, patient right ->
        # left; j: rows, anterior -> posterior; k: slices), as LiTS-derived files are.
        vol.view_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        vol.notes.append(
            "orientation assumed: the identity affine gives none, so the array is read in DICOM order "
            "(axis 0 columns right->left, axis 1 rows anterior->posterior, axis 2 slices); the mask is "
            "written in the input's own array order and affine"
        )


def write_nifti(
    path: str | os.PathLike[str], data: np.ndarray, like: Volume, dtype: Any = np.uint8, *, fsync: bool = True
) -> int:
    """Write ``data`` (the file's own [I, J, K] order) as NIfTI with ``like``'s affine; bytes written.

    The NIfTI header of a NIfTI input is kept (its qform/sform codes and units), so the
    mask lies exactly on the input in every viewer; other inputs get sform/qform code 1
    (scanner coordinates). Written under a temporary name and renamed into place.
    """
    import nibabel as nib

    arr = np.asarray(data, dtype=dtype)
    img = nib.Nifti1Image(arr, like.affine)
    code = int(like.meta.get("xform_code") or 1)
    img.set_sform(like.affine, code=code)
    img.set_qform(like.affine, code=code)
    img.header.set_xyzt_units("mm", "sec")
    if arr.dtype == np.uint8:
        img.header["cal_min"], img.header["cal_max"] = 0, 1
    # Streamed to the file (through gzip for .gz): no uncompressed copy of the volume in memory.
    # Level 1: a mask is mostly runs of zeros; higher levels cost seconds and save little.
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        if str(path).lower().endswith(".gz"):
            gzip_file: Any
            try:  # zlib-ng: 0.45 -> 0.34 s for a 512x512x300 mask (2-vCPU EPYC); the same gzip format
                from zlib_ng.gzip_ng import GzipNGFile as gzip_file
            except ImportError:  # pragma: no cover - zlib-ng is a base dependency
                from gzip import GzipFile as gzip_file

            with gzip_file(filename="", mode="wb", fileobj=f, compresslevel=1, mtime=0) as gz:
                img.to_stream(gz)
        else:
            img.to_stream(f)
    return Path(path).stat().st_size


def axial_to_ras(vol: Volume, points: np.ndarray) -> np.ndarray:
    """RAS+ mm (the file's affine) of ``points`` [N, 3] given as (slice, row, column) of :meth:`Volume.axial`."""
    from nibabel.orientations import inv_ornt_aff

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    oriented = np.c_[pts[:, 2], pts[:, 1], pts[:, 0], np.ones(len(pts))]  # axial [k, r, c] is oriented [c, r, k]
    to_file = inv_ornt_aff(vol._ornt(), vol.shape)
    return (vol.affine @ to_file @ oriented.T).T[:, :3]
