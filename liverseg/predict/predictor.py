"""The one path from an input's pixels to its mask, for a 2D slice and for a CT volume.

::

    slice:   gray [H, W] -> prepare_slice (to the model's pixel spacing, bounded size) -> model
             -> finish_slice (back to the slice's grid, threshold, cleanup)
    volume:  Volume (HU) -> volume_input (CT check, window, spacing; then, streamed in a
             background thread: window and resample each slice, find the lungs)
             -> predict_volume (the model on each batch as soon as its slices are ready; back to
             the input grid and threshold in a helper thread) -> second_looks (flipped copies
             of a few slices) -> finish_volume (anatomy rule, largest component, small blobs,
             quality flags, liver statistics)

:class:`Predictor` binds these steps to one open model (:mod:`liverseg.predict.model`) and
its settings (:class:`Prep`). ``liverseg-infer`` schedules them (decode threads, the model
thread, write threads: :mod:`liverseg.infer.schedule`) and writes what they return; the
Python API (:mod:`liverseg.api`) calls them in turn. Reading files is not here: slices are
decoded by :func:`liverseg.core.images.read_image`, volumes by :mod:`liverseg.core.volume`
and :mod:`liverseg.core.dicom` (DICOMweb by :mod:`liverseg.infer.dicomweb`).

Spacing rules: a volume's voxel size comes from its header; ``Prep.spacing`` (``--spacing``)
overrides the in-plane size (and gives 2D slices one). A header whose spacing cannot be
trusted (an identity affine, zero or >10 mm pixels) is used with a stated assumption: the
pixels are taken to be at the model's training spacing (so nothing is resampled) or, when
the model records none, at 1 mm; the note says so.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from liverseg.core.ctcheck import check_ct
from liverseg.core.errors import DataError, UsageError
from liverseg.core.images import DEFAULT_MAX_PIXELS, read_image
from liverseg.core.intensity import check_windowed, interpret, restretch, window_to_gray
from liverseg.core.resample import resize_gray, resize_mask, resize_probability, target_shape
from liverseg.core.volume import Volume
from liverseg.predict.anatomy import (
    TAIL_BAND_HU,
    landmarks,
    on_the_left_mm,
    plausible_liver,
    solid_liver,
    trim_caudal_tail,
)
from liverseg.predict.cleanup import largest_component, remove_small
from liverseg.predict.qc import liver_statistics, volume_flags

if TYPE_CHECKING:
    from liverseg.predict.anatomy import Landmarks
    from liverseg.predict.model import ModelSession

__all__ = [
    "MODEL_MAX_PIXELS",
    "Prep",
    "Predictor",
    "SliceInput",
    "VolumeInput",
    "VolumeResult",
    "array_to_gray",
    "prepare_slice",
    "read_slice",
    "volume_input",
]

# A slice above this many pixels is downscaled for the model and its probability map
# resized back: memory per model call stays bounded (a 4000 x 4000 slice needed 3.2 GB in
# a width-16 U-Net). 2048 x 2048 is four times the largest usual CT slice (1024 x 1024).
MODEL_MAX_PIXELS = 2048 * 2048
SECOND_LOOK_SLICES = 8  # slices looked at again, flipped (liverseg.predict.qc: unstable, wrong_side)
STREAM_CHUNK = 8  # slices windowed and resampled before the model is told they are ready

Model = Any  # uint8 [N, 1, H, W] -> (mask [N, 1, H, W], probability [N, 1, H, W] or None)


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
    anatomy: bool = True  # volumes: keep the largest region where a liver can be (liverseg.predict.anatomy)
    min_blob: int = 0  # connected regions below this many voxels (pixels for slices) are removed
    dicom_seg: bool = False
    save_probabilities: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS  # images declaring more pixels are refused before decoding
    allow_non_ct: bool = False  # accept label maps, colour images, MR-like numbers (liverseg.core.ctcheck)

    @property
    def resamples(self) -> bool:
        """True when some input may be resampled (so the probability map is needed to go back)."""
        return self.model_spacing is not None


# ---------------------------------------------------------------- slices


@dataclass
class SliceInput:
    """A 2D slice ready for the model: ``pixels`` at the model's spacing, ``gray`` on the slice's own grid."""

    gray: np.ndarray  # uint8 [H, W]
    pixels: np.ndarray  # uint8 [H', W']: what the model takes (``gray`` itself when not resized)
    notes: list[str] = field(default_factory=list)

    @property
    def resized(self) -> bool:
        return self.pixels is not self.gray


def array_to_gray(arr: np.ndarray, prep: Prep, source: str = "image") -> tuple[np.ndarray, list[str]]:
    """A 2D array's gray slice by the intensity rule (:mod:`liverseg.core.intensity`), and its notes.

    What :func:`liverseg.core.images.read_image` does for a file's pixels: the CT check, the window,
    and for 8-bit as given (``intensity`` auto) the exporter's window estimated from the histogram.
    """
    kind = interpret(arr, prep.intensity, source)
    if not prep.allow_non_ct:
        check_ct(arr, kind, source)
    gray = window_to_gray(arr, kind, prep.window, source)
    check_windowed(gray, arr, kind, prep.window, source)
    notes: list[str] = []
    if arr.dtype == np.uint8 and prep.intensity == "auto":
        gray, note = restretch(gray)
        if note is not None:
            notes.append(note)
    return gray, notes


def read_slice(path: str | os.PathLike[str], prep: Prep, notes: list[str]) -> np.ndarray:
    """A slice file's gray pixels by ``prep``'s intensity rule, window, size limit and CT check (notes said)."""
    return read_image(
        path,
        intensity=prep.intensity,
        window=prep.window,
        max_pixels=prep.max_pixels,
        notes=notes,
        check_ct=not prep.allow_non_ct,
        estimate_window=prep.intensity == "auto",
    )


def prepare_slice(gray: np.ndarray, prep: Prep, notes: list[str] | None = None) -> SliceInput:
    """``gray`` resized to the model's pixel spacing (when ``prep.spacing`` gives the slice's) and bounded in size."""
    notes = [] if notes is None else notes
    shape = gray.shape
    if prep.spacing is not None:
        shape = target_shape(gray.shape, (prep.spacing, prep.spacing), prep.model_spacing)
    if shape[0] * shape[1] > MODEL_MAX_PIXELS:  # bound the model's memory per call
        f = (MODEL_MAX_PIXELS / (shape[0] * shape[1])) ** 0.5
        shape = (max(1, int(shape[0] * f)), max(1, int(shape[1] * f)))
        notes.append(
            f"{gray.shape[1]}x{gray.shape[0]} is larger than the model takes in one call "
            f"({MODEL_MAX_PIXELS / 1e6:.1f} M pixels): run at {shape[1]}x{shape[0]} and the mask resized back"
        )
    pixels = resize_gray(gray, shape) if shape != gray.shape else gray
    return SliceInput(gray, pixels, notes)


def finish_slice(
    si: SliceInput, mask: np.ndarray, prob: np.ndarray | None, threshold: float, prep: Prep
) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 0/1 mask, probability or None) on the slice's own grid, cleaned up as ``prep`` asks."""
    if si.resized:  # resized for the model: back, then threshold
        if prob is None:  # only a slice shrunk to the model's size limit comes without it
            mask = resize_mask(mask, si.gray.shape)
        else:
            prob = resize_probability(prob, si.gray.shape)
            mask = (prob > threshold).astype(np.uint8)
    if prep.largest_component or prep.min_blob > 1:
        pred = mask.astype(bool)
        if prep.largest_component:
            pred, _ = largest_component(pred)
        pred, _ = remove_small(pred, prep.min_blob)
        mask = pred.astype(np.uint8)
    return mask, prob


# ---------------------------------------------------------------- volumes


@dataclass
class SecondLooks:
    """The model's masks on flipped copies of a few of a volume's slices, for the quality flags (predict.qc)."""

    slices: np.ndarray  # int [n]: which slices (axial, the model's view)
    upside_down: np.ndarray  # bool [n, R, C]: the mask of each slice turned upside down, turned back
    mirrored_cm2: float  # the mean area per slice the model found in the slices mirrored left-right ...
    found_cm2: float  # ... and in the slices as they are (the model's own mask, before any rule)


@dataclass
class VolumeInput:
    """A volume on its way through the model: geometry, the model's slices (filled as they are ready), the label.

    ``gray`` and ``model_in`` are filled by a background thread (:func:`volume_input`);
    :meth:`wait` blocks until the first ``n`` slices are in, :meth:`complete` until all of them and
    the landmarks are.
    """

    volume: Volume
    gray: np.ndarray  # uint8 [K, R, C]: windowed slices on the input grid, in the model's view
    model_in: np.ndarray  # uint8 [K, R', C']: the same at the model's pixel spacing (``gray`` itself if equal)
    spacing: tuple[float, float, float]  # (slice, row, column) mm of ``gray``, as used
    truth: np.ndarray | None = None  # bool [K, R, C]
    notes: list[str] = field(default_factory=list)
    marks: Landmarks | None = None  # lungs and body centre, read from the HU voxels before they were freed
    left_mm: float | None = None  # where the model's own mask lies (liverseg.predict.anatomy.on_the_left_mm)
    looks: SecondLooks | None = None  # the model on flipped copies of a few slices (second_looks)
    # the CT numbers (axial view, stored values; minus hu_offset for HU), kept for the liver's statistics until
    # the volume is written; None for a gray volume
    hu: np.ndarray | None = None
    hu_offset: float = 0.0
    label_error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # what callers make of it beside the model (a report)
    _ready: int = 0  # slices of ``model_in`` filled
    _done: bool = True  # every slice and the landmarks are in (or the fill failed)
    _error: BaseException | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def resampled(self) -> bool:
        return self.model_in.shape != self.gray.shape

    def wait(self, n: int) -> None:
        """Block until the first ``n`` slices are ready; raise what the fill raised."""
        with self._cond:
            self._cond.wait_for(lambda: self._ready >= n or self._error is not None or self._done)
            if self._error is not None:
                raise self._error

    def complete(self) -> None:
        """Block until every slice and the landmarks are in; raise what the fill raised."""
        with self._cond:
            self._cond.wait_for(lambda: self._done)
            if self._error is not None:
                raise self._error


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


def _sample(ax: np.ndarray) -> np.ndarray:
    """Every 8th slice: enough to tell what the values are without a pass over all of them."""
    return np.asarray(ax[:: max(1, ax.shape[0] // 16)])


def _intensity(vol: Volume, ax: np.ndarray, prep: Prep) -> str:
    """What the stored values are (:func:`interpret`), after the modality and CT checks on a sample of slices."""
    modality = str(vol.meta.get("modality") or "")
    if modality and modality.upper() not in ("CT", ""):
        raise DataError(f"{vol.source}: modality is {modality}, not CT")
    sample = _sample(ax)
    kind = interpret(sample, prep.intensity, vol.source)
    if not prep.allow_non_ct:
        check_ct(sample, kind, vol.source, modality_known=modality.upper() == "CT")
    if kind == "gray" and vol.data.dtype != np.uint8:
        raise DataError(
            f"{vol.source}: its values ({vol.data.dtype}, no air below -200) do not look like CT numbers in HU "
            "(an MR scan, a mask, or stored values without their rescale?); pass --intensity hu or hu+1024 if "
            "they are CT"
        )
    # the window must not turn the volume into one flat value: told on the sample, else (rare) on every slice
    sample_gray = np.empty(sample.shape, dtype=np.uint8)
    for k in range(sample.shape[0]):
        window_to_gray(sample[k], kind, prep.window, vol.source, out=sample_gray[k])
    if sample_gray.size and not np.any(sample_gray != sample_gray.flat[0]):
        gray = np.empty(ax.shape, dtype=np.uint8)
        for k in range(ax.shape[0]):
            window_to_gray(ax[k], kind, prep.window, vol.source, out=gray[k])
        check_windowed(gray, sample, kind, prep.window, vol.source)
    return kind


def volume_input(vol: Volume, prep: Prep, stream: bool = True) -> VolumeInput:
    """A volume read from a file or given as an array (the Python API), on its way to the model.

    The checks (modality, CT numbers, the window) run here and raise :class:`DataError`; then a
    background thread windows each slice to the model's gray input, resamples it to the model's
    pixel spacing, ``STREAM_CHUNK`` slices at a time, and last finds the lungs
    (:func:`liverseg.predict.anatomy.landmarks`), so the model starts on the first slices while the
    rest are prepared. ``stream=False`` does it all before returning.
    """
    notes = list(vol.notes)
    ax = vol.axial()
    kind = _intensity(vol, ax, prep)
    if kind != "hu":
        notes.append(f"intensities read as {kind}")
    spacing = _spacing(vol, prep, notes)
    hu = ax if kind != "gray" else None  # a view: the voxels stay until the statistics are taken
    vol.data = np.broadcast_to(np.zeros((), dtype=vol.data.dtype), vol.data.shape)
    k, r, c = ax.shape
    gray = np.empty((k, r, c), dtype=np.uint8)
    shape = target_shape((r, c), spacing[1:], prep.model_spacing)
    model_in = np.empty((k, *shape), dtype=np.uint8) if shape != (r, c) else gray
    offset = 1024.0 if kind == "hu+1024" else 0.0
    vi = VolumeInput(vol, gray, model_in, spacing, notes=notes, hu=hu, hu_offset=offset, _done=False)

    def fill() -> None:
        try:
            for k0 in range(0, k, STREAM_CHUNK):
                for j in range(k0, min(k, k0 + STREAM_CHUNK)):
                    window_to_gray(ax[j], kind, prep.window, vol.source, out=gray[j])
                    if model_in is not gray:
                        model_in[j] = resize_gray(gray[j], shape)
                with vi._cond:
                    vi._ready = min(k, k0 + STREAM_CHUNK)
                    vi._cond.notify_all()
            if prep.anatomy and kind != "gray":
                vi.marks = _landmarks(ax, offset, spacing, vi.notes)
        except BaseException as e:  # handed to whoever waits for the slices
            vi._error = e
        with vi._cond:
            vi._done = True
            vi._cond.notify_all()

    if stream:
        threading.Thread(target=fill, name="liverseg-prepare", daemon=True).start()
    else:
        fill()
        vi.complete()
    return vi


def _landmarks(
    ax: np.ndarray, offset: float, spacing: tuple[float, float, float], notes: list[str]
) -> Landmarks | None:
    """The lungs and body centre of a CT volume (None without scipy: said in a note)."""
    try:
        return landmarks(ax, spacing, offset=offset)
    except DataError as e:  # scipy is missing: the mask is written as the model gave it, and the note says so
        notes.append(f"anatomy check skipped: {e}")
        return None


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


@dataclass
class VolumeResult:
    """A volume's cleaned mask in the model's view, with what the rules removed, its flags and statistics."""

    mask: np.ndarray  # bool [K, R, C]
    removed: int
    flags: list[str]
    statistics: dict[str, Any]


class Predictor:
    """One open model and the settings every input goes through: the steps in the module docstring.

    ``keep_probability``: the probability map comes back to the caller (``--save-probabilities``,
    ``probabilities=True``); it is computed anyway where inputs are resized to the model's spacing.
    """

    def __init__(
        self,
        session: ModelSession,
        prep: Prep,
        batch_size: int = 1,
        *,
        second_look: bool = True,
        keep_probability: bool = False,
    ) -> None:
        self.session, self.prep, self.batch_size = session, prep, batch_size
        self.second_look, self.keep_probability = second_look, keep_probability
        self.want_probability = keep_probability or prep.resamples

    @property
    def threshold(self) -> float:
        return self.session.threshold

    def model(self, batch: np.ndarray, probability: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 [N, 1, H, W] -> (mask, probability or None): one call of the model. ``probability`` None: asked
        for where some input may need it (kept, or resized to the model's spacing and back)."""
        return self.session.run(batch, probability=self.want_probability if probability is None else probability)

    # ------------------------------------------------------------ slices

    def finish_slice(
        self, si: SliceInput, mask: np.ndarray, prob: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return finish_slice(si, mask, prob, self.threshold, self.prep)

    def segment_slice(self, si: SliceInput) -> tuple[np.ndarray, np.ndarray | None]:
        """A prepared slice through the model and back: (uint8 mask, probability when kept) on its own grid."""
        mask, prob = self.model(np.ascontiguousarray(si.pixels[None, None]), self.keep_probability or si.resized)
        out_mask, out_prob = self.finish_slice(si, mask[0, 0], None if prob is None else prob[0, 0])
        if not si.resized:
            out_mask = (out_mask != 0).astype(np.uint8)
        if not self.keep_probability:
            return out_mask, None
        if out_prob is None:
            raise UsageError(f"{self.session.path}: the model gave no probability output")
        return out_mask, np.asarray(out_prob, dtype=np.float32)

    # ------------------------------------------------------------ volumes

    def _wants_probability(self, vi: VolumeInput) -> bool:
        """A volume's model calls ask for the probability where it is kept or brought back from the model's grid."""
        return self.keep_probability or vi.resampled

    def predict_volume(self, vi: VolumeInput) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(mask uint8 [K, R, C], probability float32 [K, R, C] or None, seconds inside the model).

        Each batch runs as soon as its slices are ready (:func:`volume_input` fills them behind).
        The probability volume (4 bytes a voxel) is kept only when ``keep_probability``; otherwise
        each slice's map is used and dropped. Each batch's maps are brought back to the slice grid
        and thresholded in a helper thread while the model runs the next batch (Pillow and numpy
        release the GIL). Then the second look (:meth:`second_looks`) when asked.
        """
        k, r, c = vi.gray.shape
        mask = np.empty((k, r, c), dtype=np.uint8)
        prob_out: np.ndarray | None = None
        seconds = 0.0
        threshold, batch_size = self.threshold, self.batch_size
        want = self._wants_probability(vi)

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
                vi.wait(min(k, k0 + batch_size))
                batch = np.ascontiguousarray(vi.model_in[k0 : k0 + batch_size, None])
                t = time.perf_counter()
                m, p = self.model(batch, want)
                seconds += time.perf_counter() - t
                if self.keep_probability and p is not None and prob_out is None:
                    prob_out = np.empty((k, r, c), dtype=np.float32)
                if placing is not None:
                    placing.result()  # one batch in the helper at a time; its error is raised here
                placing = helper.submit(place, k0, batch.shape[0], m, p)
            if placing is not None:
                placing.result()
        vi.complete()
        if self.keep_probability and prob_out is None:
            raise UsageError(f"{self.session.path}: the model gave no probability output")
        if self.second_look:
            seconds += self.second_looks(vi, mask)
        return mask, prob_out, seconds

    def second_looks(self, vi: VolumeInput, mask: np.ndarray) -> float:
        """Run the model on flipped copies of a few slices that hold the model's ``mask``; seconds spent.

        Up to :data:`SECOND_LOOK_SLICES` slices, evenly spaced over those where the model found
        liver, are run once upside down (an augmentation the reference model was trained with: a
        stable prediction barely changes) and once mirrored left-right (one it was not: a
        correctly oriented scan loses most of its liver, a mirrored one gains it). Two batches of
        at most 8 slices (``batch_size`` at a time), about 5% of a 300-slice series' model time. The result
        goes to ``vi.looks`` for :func:`liverseg.predict.qc.volume_flags`; nothing is done without a mask.
        """
        found = np.flatnonzero(mask.any(axis=(1, 2)))
        if found.size == 0:
            return 0.0
        n_pick = min(SECOND_LOOK_SLICES, found.size)
        picks = np.unique(found[np.round(np.linspace(0, found.size - 1, n_pick)).astype(int)])
        x = vi.model_in[picks]
        n, (r, c) = picks.size, vi.gray.shape[1:]
        turned = np.empty((n, r, c), dtype=bool)
        mirrored = np.empty((n, r, c), dtype=bool)
        t = time.perf_counter()
        for flipped, out, axis in ((x[:, ::-1, :], turned, 2), (x[:, :, ::-1], mirrored, 3)):
            for j0 in range(0, n, self.batch_size):
                batch = np.ascontiguousarray(flipped[j0 : j0 + self.batch_size, None])  # [b, 1, R', C']
                m, p = self.model(batch, self._wants_probability(vi))
                m, p = np.flip(m, axis=axis), (None if p is None else np.flip(p, axis=axis))  # the slices' own view
                for j in range(m.shape[0]):
                    _on_input_grid(vi, m, p, j, self.threshold, out[j0 + j])
        pixel_cm2 = vi.spacing[1] * vi.spacing[2] / 100.0
        vi.looks = SecondLooks(
            picks,
            turned,
            mirrored_cm2=float(np.count_nonzero(mirrored)) * pixel_cm2 / n,
            found_cm2=float(np.count_nonzero(mask[picks])) * pixel_cm2 / n,
        )
        return time.perf_counter() - t

    def finish_volume(self, vi: VolumeInput, mask: np.ndarray) -> VolumeResult:
        """The cleanup (:func:`clean_volume`), the quality flags and the liver's statistics of a predicted volume.

        The CT numbers and the second look are dropped from ``vi`` afterwards (the statistics were their use).
        """
        vi.complete()
        pred, removed = clean_volume(mask, vi, self.prep)
        flags = volume_flags(pred, vi.spacing, removed, vi.notes, vi.left_mm, vi.looks)
        stats = liver_statistics(pred, vi.hu, vi.spacing, flags, vi.volume, vi.hu_offset)
        vi.hu = vi.looks = None
        return VolumeResult(pred, removed, flags, stats)


def _trim_tail(pred: np.ndarray, vi: VolumeInput, prep: Prep) -> tuple[np.ndarray, int]:
    """The anatomy rule's second step: the slices below the liver that are not liver-like (gray volumes: none)."""
    if vi.marks is None or not pred.any():  # no HU behind the gray slices: the band cannot be told
        return pred, 0
    band = TAIL_BAND_HU * 255.0 / (prep.window[1] - prep.window[0])
    out, n = trim_caudal_tail(pred, vi.gray, band)
    if n:
        ml = n * float(np.prod(vi.spacing)) / 1000.0
        vi.notes.append(f"anatomy: removed {ml:.0f} mL below the liver whose CT numbers are not the liver's")
    return out, n


def clean_volume(mask: np.ndarray, vi: VolumeInput, prep: Prep) -> tuple[np.ndarray, int]:
    """(the cleaned bool mask, voxels removed): the anatomy rule (with the liver made solid), the largest component,
    small blobs, as asked.

    The anatomy rule clears what it refuses in the model's ``mask`` itself (its callers have no other use for
    it). What the rule refused (or "no liver") goes into ``vi.notes``.
    """
    removed = 0
    pred = mask.view(bool)  # the model's mask is 0/1 uint8: a view, not a copy of the volume
    if prep.anatomy and pred.any():
        try:
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
            solid_liver(pred, vi.spacing)
    if prep.largest_component:
        pred, n = largest_component(pred)
        removed += n
    if prep.min_blob > 1:
        pred, n = remove_small(pred, prep.min_blob)
        removed += n
    return pred, removed
