"""The Python API: an image, a CT volume or a file in, the liver mask out.

.. code-block:: python

    import liverseg

    mask = liverseg.segment(ct_slice)                          # 2D array [H, W] -> uint8 0/1 [H, W]
    mask = liverseg.segment(ct, spacing=(2.5, 0.8, 0.8))       # 3D array [slices, rows, cols], mm
    mask = liverseg.segment(img.get_fdata(), affine=img.affine)  # 3D array in a NIfTI's [I, J, K] order
    mask_img = liverseg.segment(nibabel.load("ct.nii.gz"))     # a nibabel image -> a nibabel image, same affine
    mask_img = liverseg.segment(sitk.ReadImage("ct.nrrd"))     # a SimpleITK image -> one with its geometry
    mask, prob = liverseg.segment("ct.nii.gz", probabilities=True)
    result = liverseg.segment(ct, spacing=(2.5, 0.8, 0.8), details=True)
    result.mask, result.qc_flags, result.statistics["volume_ml"]   # flags: docs/quality.md

    with liverseg.Segmenter(device="cuda") as seg:             # the model stays loaded between calls
        masks = [seg(s) for s in slices]

Both take the model the command line takes (:func:`liverseg.reference.resolve_model`):
``None`` or ``"reference"`` is the reference model shipped with liverseg, ``"latest"``
the newest ``runs/*/export/model.onnx``, anything else a file: an exported ONNX model or
a liverseg checkpoint (``.pt``, exported once into the cache). The engine, precision
and device are chosen as ``liverseg-infer`` chooses them (:func:`liverseg.predict.model.open_model`), and
every input goes through the predictor ``liverseg-infer`` uses (:mod:`liverseg.predict.predictor`):
``device="cuda"`` that cannot load is an error, ``auto`` takes CUDA when it loads.

Inputs, and the preprocessing of ``liverseg-infer``:

* a 2D array ``[H, W]``: 8-bit gray, or CT numbers (HU, or HU+1024 as unsigned 16-bit),
  read by the rule of :mod:`liverseg.core.intensity` and windowed by the model's contract;
  ``spacing`` (mm, one number or ``(row, col)``) resizes it to the model's pixel spacing;
* a 3D array with ``spacing=(slice, row, col)`` mm: taken as ``[slices, rows, cols]`` axial
  slices as they are (no reorientation), the mask in the same order. A bare array has no
  geometry, so it must be in **the model's view**: slices from the feet up (slice 0 the most
  inferior), rows from the front (row 0 anterior), columns from the patient's right to the
  left (column 0 on the patient's right): the radiological view, and what
  ``sitk.GetArrayFromImage`` gives for an image in LPS orientation (a DICOM series; identity
  direction). An array in another order (``nib.load(f).get_fdata().T`` of a RAS NIfTI is
  mirrored left-right and upside down) gives a wrong mask: pass the image object, or its
  ``affine``, instead. A mirrored volume is flagged ``wrong_side``;
* a 3D array with ``affine`` (4x4, voxel index to RAS+ mm, as nibabel gives it): in the
  affine's ``[I, J, K]`` order, reoriented to the model's view like a NIfTI file, the mask
  back in ``[I, J, K]`` order;
* a nibabel image (its voxels and affine) or a SimpleITK image (its voxels, origin,
  direction and spacing; 2D or 3D): the mask comes back as an image of the same library on
  the same grid (with ``probabilities``, the probability too);
* a path: an image (PNG, TIFF, JPEG, DICOM slice), a volume (NIfTI, NRRD, MetaImage, MRC)
  or a DICOM series folder; a volume's mask is in the file's own voxel order.

The result is a uint8 mask (1 = liver) of the input's shape and, with
``probabilities=True``, also the float32 liver probability of the same shape. Volumes get
the quality flags of ``liverseg-infer`` (:mod:`liverseg.predict.qc`): raised flags are logged
as a warning, and ``details=True`` returns a :class:`Segmentation` with the mask, the
probability, the flags, the liver's statistics and the notes.

Nothing here imports torch (unless a checkpoint has to be exported).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from liverseg.core.contract import ct_settings
from liverseg.core.dicom import read_scan
from liverseg.core.errors import UsageError
from liverseg.core.intensity import INTENSITY_MODES, WINDOW_ESTIMATED
from liverseg.core.metrics3d import volume_ml
from liverseg.core.pages import small_pages
from liverseg.core.volume import MODEL_AXCODES, Volume, is_volume_path, spacing_problem
from liverseg.predict.model import ModelSession, open_model
from liverseg.predict.predictor import (
    Predictor,
    Prep,
    VolumeInput,
    array_to_gray,
    prepare_slice,
    read_slice,
    volume_input,
)
from liverseg.reference import default_runs_dir

__all__ = ["Segmentation", "Segmenter", "segment"]

Image = Any  # an array, a path, a nibabel image or a SimpleITK image (the module docstring)
Spacing = float | tuple[float, float] | tuple[float, float, float] | None
Result = np.ndarray | tuple[np.ndarray, np.ndarray]

_log = logging.getLogger("liverseg")


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """What :meth:`Segmenter.segment` found, with ``details=True``.

    ``mask`` (uint8, 1 = liver) and ``probability`` (float32, or None unless asked for)
    are of the input's kind: an array of its shape, a nibabel image with its affine, a
    SimpleITK image with its geometry. ``qc_flags`` are the codes of :mod:`liverseg.predict.qc`
    (docs/quality.md), empty when none was raised. ``statistics`` (volumes): ``volume_ml``
    and the columns of ``statistics.json`` (``complete``, ``hu_mean``, ``hu_median``,
    ``hu_std``, ``extent_cc_mm``, ``bbox_ras_mm``). ``notes``: what was assumed or removed.
    """

    mask: Any
    probability: Any = None
    qc_flags: list[str] = dataclasses.field(default_factory=list)
    statistics: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def _affine_of_axial(spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine of an array whose transpose (2, 1, 0) is already in the model's view, with these mm."""
    from nibabel.orientations import axcodes2ornt

    ornt = axcodes2ornt(MODEL_AXCODES)  # file axis j -> (RAS axis, flip)
    zooms = (spacing[2], spacing[1], spacing[0])  # [C, R, K] order of the transposed array
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for j, (axis, flip) in enumerate(ornt):
        affine[int(axis), j] = float(flip) * zooms[j]
    return affine


class Segmenter:
    """A model loaded once; call it (or :meth:`segment`) on images, volumes or files.

    One Segmenter runs one call at a time; use one per thread. :attr:`notes` says which
    model, engine and device were chosen and why.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        engine: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        batch_size: int | None = None,
        runs_dir: str | os.PathLike[str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log or _log.info
        self.notes: list[str] = []  # which model, engine and device, and why

        def note(line: str) -> None:
            self.notes.append(line)
            self.log(line)

        device_name, _, index = device.partition(":")
        runs = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.session: ModelSession | None = open_model(
            model,
            [runs],
            note,
            flag="model=",
            device=device_name,
            device_id=int(index or 0),
            threads=threads,
            require_probability=True,
            engine=engine,
            precision=precision,
        )
        self.path = self.session.path  # the file that runs (the fp32 export, or its gated sibling)
        self.window, self.model_spacing = ct_settings(self.session.contract)
        self.batch_size = batch_size or (8 if self.session.device.startswith("cuda") else 1)

    # ------------------------------------------------------------ public

    @property
    def device(self) -> str:
        """Where the model runs: ``cpu`` or ``cuda:<id>``."""
        return self._session().device

    @property
    def threshold(self) -> float:
        return self._session().threshold

    @overload
    def segment(
        self,
        image: Image,
        *,
        spacing: Spacing = ...,
        affine: np.ndarray | None = ...,
        probabilities: Literal[False] = ...,
        intensity: str = ...,
        window: tuple[float, float] | None = ...,
        anatomy: bool = ...,
        allow_non_ct: bool = ...,
        second_look: bool = ...,
        details: Literal[False] = ...,
    ) -> Any: ...

    @overload
    def segment(
        self,
        image: Image,
        *,
        spacing: Spacing = ...,
        affine: np.ndarray | None = ...,
        probabilities: Literal[True],
        intensity: str = ...,
        window: tuple[float, float] | None = ...,
        anatomy: bool = ...,
        allow_non_ct: bool = ...,
        second_look: bool = ...,
        details: Literal[False] = ...,
    ) -> tuple[Any, Any]: ...

    @overload
    def segment(
        self,
        image: Image,
        *,
        spacing: Spacing = ...,
        affine: np.ndarray | None = ...,
        probabilities: bool = ...,
        intensity: str = ...,
        window: tuple[float, float] | None = ...,
        anatomy: bool = ...,
        allow_non_ct: bool = ...,
        second_look: bool = ...,
        details: Literal[True],
    ) -> Segmentation: ...

    def segment(
        self,
        image: Image,
        *,
        spacing: Spacing = None,
        affine: np.ndarray | None = None,
        probabilities: bool = False,
        intensity: str = "auto",
        window: tuple[float, float] | None = None,
        anatomy: bool = True,
        allow_non_ct: bool = False,
        second_look: bool = True,
        details: bool = False,
    ) -> Result | Segmentation:
        """The liver mask of ``image`` (and its probability when ``probabilities``); inputs in the module docstring.

        ``intensity`` says what stored values are (``auto``, ``gray``, ``hu``, ``hu+1024``);
        ``window`` (HU) overrides the model's contract. ``anatomy`` (volumes): keep only the
        largest region where a liver can be (:mod:`liverseg.predict.anatomy`), as ``liverseg-infer``
        does; an empty mask means "no liver in this scan". The probability map is not cleaned.
        Inputs that do not look like CT (label maps, colour images, MR-like numbers:
        :mod:`liverseg.core.ctcheck`) raise :class:`DataError` unless ``allow_non_ct``.
        ``second_look`` (volumes): the model once more on a few flipped slices, for the
        ``wrong_side`` and ``unstable`` flags. The quality flags raised are logged as warnings
        (logger ``liverseg``); ``details=True`` returns a :class:`Segmentation` that carries them
        with the liver's statistics.
        """
        if intensity not in INTENSITY_MODES:
            raise UsageError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
        prep = Prep(
            window=self._window(window),
            model_spacing=self.model_spacing,
            intensity=intensity,
            save_probabilities=True,
            anatomy=anatomy,
            allow_non_ct=allow_non_ct,
        )
        with small_pages():  # a volume's arrays filled without numpy's huge-page advice (liverseg.core.pages)
            out = self._segment(image, spacing, affine, probabilities, prep, second_look)
        if out.qc_flags:
            _log.warning("quality flags: %s (docs/quality.md)", ", ".join(out.qc_flags))
        if details:
            return out
        return (out.mask, out.probability) if probabilities else out.mask

    __call__ = segment

    def _segment(
        self,
        image: Any,
        spacing: Spacing,
        affine: np.ndarray | None,
        probabilities: bool,
        prep: Prep,
        second_look: bool,
    ) -> Segmentation:
        if isinstance(image, (str, os.PathLike)):
            return self._path(Path(image), prep, spacing, probabilities, second_look)
        image_type = _image_type(image)
        if image_type == "nibabel":
            if affine is not None or spacing is not None:
                raise UsageError("a nibabel image carries its own geometry: pass no spacing or affine")
            voxels = np.asarray(image.dataobj)
            if voxels.ndim == 4 and voxels.shape[3] == 1:  # one volume of a 4D file
                voxels = voxels[..., 0]
            if voxels.ndim != 3:
                raise UsageError(f"a nibabel image of shape {voxels.shape}: expected a 3D CT volume")
            out = self._array_volume(voxels, prep, None, image.affine[:4, :4], probabilities, second_look)
            return _as_nibabel(out, image)
        if image_type == "sitk":
            if affine is not None or spacing is not None:
                raise UsageError("a SimpleITK image carries its own geometry: pass no spacing or affine")
            arr, aff_or_spacing = _from_sitk(image)
            if arr.ndim == 2:
                out = self._slice(arr, prep, _in_plane(aff_or_spacing), probabilities, "SimpleITK image")
            else:  # [z, y, x] -> [I, J, K] with the affine of the image's geometry
                out = self._array_volume(arr.transpose(2, 1, 0), prep, None, aff_or_spacing, probabilities, second_look)
                out = dataclasses.replace(out, mask=out.mask.transpose(2, 1, 0), probability=_t(out.probability))
            return _as_sitk(out, image)
        arr = np.asarray(image)
        if arr.ndim == 2:
            return self._slice(arr, prep, _in_plane(spacing), probabilities, "array")
        if arr.ndim == 3:
            return self._array_volume(arr, prep, spacing, affine, probabilities, second_look)
        raise UsageError(f"expected a 2D image [H, W] or a 3D volume, got an array of shape {arr.shape}")

    def close(self) -> None:
        """Release the model (its memory, and the GPU's)."""
        self.session = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ inputs

    def _session(self) -> ModelSession:
        """The model's session, or a UsageError once the Segmenter is closed."""
        if self.session is None:
            raise UsageError("this Segmenter is closed")
        return self.session

    def _window(self, window: tuple[float, float] | None) -> tuple[float, float]:
        if window is None:
            return self.window
        lo, hi = (float(v) for v in window)
        if not hi > lo:
            raise UsageError(f"window: HIGH must be above LOW, got {lo:g} {hi:g}")
        return lo, hi

    def _path(self, path: Path, prep: Prep, spacing: Spacing, probabilities: bool, second_look: bool) -> Segmentation:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_dir() or is_volume_path(path):
            if spacing is not None:
                prep = dataclasses.replace(prep, spacing=_in_plane(spacing))
            vi = volume_input(read_scan(path), prep)
            out = self._volume(vi, prep, probabilities, second_look)
            vol = vi.volume
            return dataclasses.replace(
                out, mask=vol.from_axial(out.mask), probability=_from_axial(vol, out.probability)
            )
        notes: list[str] = []
        gray = read_slice(path, prep, notes)
        out = self._slice(gray, dataclasses.replace(prep, intensity="gray"), _in_plane(spacing), probabilities)
        return _with_notes(out, notes)

    def _slice(
        self, arr: np.ndarray, prep: Prep, spacing: float | None, probabilities: bool, source: str = "image"
    ) -> Segmentation:
        """One 2D slice: gray by the intensity rule, resized to the model's spacing when both are known."""
        gray, notes = array_to_gray(arr, prep, source)
        for note in notes:
            _log.info("%s: %s", source, note)
        prep = dataclasses.replace(prep, spacing=spacing)
        si = prepare_slice(gray, prep, notes)
        mask, prob = Predictor(self._session(), prep, keep_probability=probabilities).segment_slice(si)
        return _with_notes(Segmentation(mask, prob), si.notes)

    def _array_volume(
        self,
        arr: np.ndarray,
        prep: Prep,
        spacing: Spacing,
        affine: np.ndarray | None,
        probabilities: bool,
        second_look: bool,
    ) -> Segmentation:
        if affine is not None:
            aff = np.asarray(affine, dtype=np.float64)
            if aff.shape != (4, 4):
                raise UsageError(f"affine must be a 4x4 matrix, got shape {aff.shape}")
            problem = spacing_problem(aff)
            if problem is not None:
                raise UsageError(f"affine: {problem.replace('the header', 'it')}; pass spacing=(slice, row, col) mm")
            vol = Volume(arr, aff, "array", "array")
            axial_order = False
        else:
            if spacing is None or np.ndim(spacing) != 1 or len(spacing) != 3:  # type: ignore[arg-type]
                raise UsageError(
                    "a 3D volume needs spacing=(slice, row, col) in mm (the array as [slices, rows, cols]) or "
                    "affine= (4x4, the array in its [I, J, K] order)"
                )
            mm = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
            if not all(0 < v <= 100 for v in mm):
                raise UsageError(f"spacing must be positive millimetres, got {mm}")
            vol = Volume(arr.transpose(2, 1, 0), _affine_of_axial((mm[0], mm[1], mm[2])), "array", "array")
            axial_order = True
        out = self._volume(volume_input(vol, prep), prep, probabilities, second_look)
        if axial_order:  # the array was given as [slices, rows, cols]: the model's view itself
            return out
        return dataclasses.replace(out, mask=vol.from_axial(out.mask), probability=_from_axial(vol, out.probability))

    def _volume(self, vi: VolumeInput, prep: Prep, probabilities: bool, second_look: bool) -> Segmentation:
        """The volume's mask and probability in the model's view [K, R, C], its flags and statistics."""
        predictor = Predictor(
            self._session(), prep, self.batch_size, second_look=second_look, keep_probability=probabilities
        )
        mask, prob, _ = predictor.predict_volume(vi)
        done = predictor.finish_volume(vi, mask)
        if prep.anatomy:
            for note in vi.notes:
                if note.startswith(("anatomy", "no liver")):
                    _log.info("%s", note)
        stats: dict[str, Any] = {"volume_ml": volume_ml(done.mask, vi.spacing), **done.statistics}
        return Segmentation(done.mask.view(np.uint8), prob, done.flags, stats, list(vi.notes))


def _with_notes(out: Segmentation, notes: list[str]) -> Segmentation:
    """A 2D result with its notes, and ``window_estimated`` where the 8-bit window was estimated."""
    flags = ["window_estimated"] if any(n.startswith(WINDOW_ESTIMATED) for n in notes) else []
    return dataclasses.replace(out, qc_flags=flags, notes=[*out.notes, *notes])


def _from_axial(vol: Volume, arr: np.ndarray | None) -> np.ndarray | None:
    return None if arr is None else vol.from_axial(arr)


def _t(arr: np.ndarray | None) -> np.ndarray | None:
    return None if arr is None else arr.transpose(2, 1, 0)


def _image_type(image: Any) -> str | None:
    """``nibabel`` or ``sitk`` for an image object of those libraries (told without importing them), else None."""
    module = type(image).__module__
    if module.startswith("SimpleITK"):
        return "sitk"
    if module.startswith("nibabel") and hasattr(image, "affine") and hasattr(image, "dataobj"):
        return "nibabel"
    return None


def _as_nibabel(out: Segmentation, image: Any) -> Segmentation:
    """The result as NIfTI images on ``image``'s grid and affine."""
    import nibabel as nib

    def img(arr: np.ndarray | None, dtype: type) -> Any:
        if arr is None:
            return None
        made = nib.Nifti1Image(np.asarray(arr, dtype=dtype), image.affine)
        made.set_qform(image.affine, code=1)
        made.set_sform(image.affine, code=1)
        return made

    return dataclasses.replace(out, mask=img(out.mask, np.uint8), probability=img(out.probability, np.float32))


def _from_sitk(image: Any) -> tuple[np.ndarray, Any]:
    """A SimpleITK image's voxels ([z, y, x], or [y, x]) and geometry: the RAS+ affine of its [x, y, z] order
    (from its LPS origin, direction and spacing), or a 2D image's (row, col) pixel size."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UsageError(
            f"a SimpleITK image with {image.GetNumberOfComponentsPerPixel()} components per pixel: a CT has one"
        )
    arr = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        sx, sy = image.GetSpacing()
        return arr, (float(sy), float(sx))
    if image.GetDimension() != 3:
        raise UsageError(f"expected a 2D or 3D SimpleITK image, got {image.GetDimension()}D")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)  # column j: index axis j in mm
    lps[:3, 3] = image.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def _as_sitk(out: Segmentation, image: Any) -> Segmentation:
    """The result as SimpleITK images with ``image``'s geometry."""
    import SimpleITK as sitk

    def img(arr: np.ndarray | None, dtype: type) -> Any:
        if arr is None:
            return None
        made = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=dtype))
        made.CopyInformation(image)
        return made

    return dataclasses.replace(out, mask=img(out.mask, np.uint8), probability=img(out.probability, np.float32))


def _in_plane(spacing: Spacing) -> float | None:
    """A 2D input's pixel size: one number, or (row, col) when both are equal."""
    if spacing is None:
        return None
    if isinstance(spacing, (int, float)):
        return float(spacing)
    values = [float(v) for v in spacing]
    if len(values) == 3:
        values = values[1:]
    if len(values) != 2 or abs(values[0] - values[1]) > 1e-6:
        raise UsageError(f"a 2D image needs one pixel size (or equal row and column sizes), got {spacing}")
    return values[0]


@overload
def segment(
    image: Image,
    model: str | os.PathLike[str] | None = ...,
    *,
    spacing: Spacing = ...,
    affine: np.ndarray | None = ...,
    probabilities: Literal[False] = ...,
    device: str = ...,
    engine: str = ...,
    precision: str = ...,
    **options: Any,
) -> np.ndarray: ...


@overload
def segment(
    image: Image,
    model: str | os.PathLike[str] | None = ...,
    *,
    spacing: Spacing = ...,
    affine: np.ndarray | None = ...,
    probabilities: Literal[True],
    device: str = ...,
    engine: str = ...,
    precision: str = ...,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]: ...


def segment(
    image: Image,
    model: str | os.PathLike[str] | None = None,
    *,
    spacing: Spacing = None,
    affine: np.ndarray | None = None,
    probabilities: bool = False,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Any:
    """Segment the liver in one image, volume or file with ``model`` (None: the shipped reference model).

    Loads the model for this one call; :class:`Segmenter` keeps it loaded. ``options``:
    ``intensity``, ``window``, ``anatomy``, ``allow_non_ct``, ``second_look`` and ``details`` go to
    :meth:`Segmenter.segment`, the rest (``threads``,
    ``batch_size``, ``runs_dir``, ``log``) to :class:`Segmenter`.
    """
    keys = ("intensity", "window", "anatomy", "allow_non_ct", "second_look", "details")
    call = {k: options.pop(k) for k in keys if k in options}
    with Segmenter(model, device=device, engine=engine, precision=precision, **options) as seg:
        if probabilities:
            return seg.segment(image, spacing=spacing, affine=affine, probabilities=True, **call)
        return seg.segment(image, spacing=spacing, affine=affine, **call)
