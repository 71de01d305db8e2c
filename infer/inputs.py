"""Inputs and outputs of the inference runner: listing, naming, decoding, PNG encoding, per_image.csv lines.

Nothing here imports torch: the runner is onnxruntime + numpy + Pillow.

Naming rule (:func:`output_keys`): an input's outputs are named from its file stem
(``Images/000.png`` -> ``masks/000_pred.png``, as the study named predictions). When
two inputs share a stem (compared case-insensitively, so the names also stay distinct
on macOS and Windows), the colliding ones get their parent folder names prepended,
one level at a time (``a/001.png`` -> ``a__001``, ``b/001.png`` -> ``b__001``); if that
never separates them (the same file listed twice, or ``001.png`` beside ``001.jpg``)
the extension and then the occurrence number are appended. A DICOM folder read with
``--series UID`` is named after the series: ``UID`` (``<folder key>__UID`` when several DICOM
folders are listed). The key is therefore a function of the input paths, the input list and
``--series`` only, and stable across ``--resume``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from liverseg.core.dicom import is_dicom_folder
from liverseg.core.errors import UsageError, describe
from liverseg.core.images import IMAGE_EXTENSIONS, DataError, Sample, discover, read_mask
from liverseg.core.volume import VOLUME_SUFFIXES, is_volume_path
from liverseg.infer.volumes import load_volume
from liverseg.predict.predictor import Prep, SliceInput, VolumeInput, prepare_slice, read_slice

MASK_DIR = "masks"
PROB_DIR = "probabilities"
OVERLAY_DIR = "overlays"

PER_IMAGE_COLUMNS = (
    "index",
    "input",
    "label",
    "output",
    "status",
    "error",
    "height",
    "width",
    "latency_ms",
    "liver_fraction",
    "dice",
    "iou",
    "mPA",
    "mIoU",
    "precision",
    "recall",
    "tp",
    "fp",
    "fn",
    "tn",
    "qc_flags",
    "notes",
)


# ---------------------------------------------------------------- listing


@dataclass(frozen=True, slots=True)
class Item:
    """One input of the run: its position, files, and the key its outputs are named by.

    Paths are kept as plain strings in a slotted record: a run holds one Item per input
    for its whole length, and at 10,000 inputs ``Path`` objects with their cached parts
    were most of the memory that grew with the input count.
    """

    index: int
    image: str
    label: str | None
    key: str
    kind: str = "image"  # "image" (a 2D slice), "volume" (NIfTI/NRRD/MetaImage) or "dicom" (a series folder)

    @property
    def is_volume(self) -> bool:
        return self.kind != "image"

    @property
    def mask_name(self) -> str:
        return f"{MASK_DIR}/{self.key}.nii.gz" if self.is_volume else f"{MASK_DIR}/{self.key}_pred.png"

    @property
    def prob_name(self) -> str:
        return f"{PROB_DIR}/{self.key}_prob.nii.gz" if self.is_volume else f"{PROB_DIR}/{self.key}_prob.png"

    @property
    def overlay_name(self) -> str:
        return f"{OVERLAY_DIR}/{self.key}_overlay.png"


RUN_STATE = "run.json"  # marks an inference run folder (liverseg.infer.resume writes it)
RUN_FORMAT = "liverseg-infer-run"


def run_folders_under(folder: Path) -> list[Path]:
    """Inference run folders inside ``folder`` (a ``run.json`` of this tool): never inputs of a later run.

    A split run's part keeps its run.json in ``OUT/parts/part-K-of-N/``: the whole ``OUT`` is the run folder.
    """
    found = []
    for state in folder.rglob(RUN_STATE):
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
            if data.get("format") == RUN_FORMAT:
                found.append(state.parents[2] if data.get("part") else state.parent)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str | os.PathLike, folders: list[str]) -> bool:
    p = os.path.realpath(path) + os.sep
    return any(p.startswith(f) for f in folders)


def list_inputs(
    source: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    exclude: list[Path] | None = None,
    series: str | None = None,
) -> list[Item]:
    """The run's inputs, in list order, with labels found as :func:`liverseg.core.images.discover` does.

    ``source``: a study image CSV (``X``), a pairs CSV (``X,Y``) or a folder. ``labels``:
    a ``*_y.csv`` or a folder of masks; without it ``test_x.csv`` pairs with
    ``test_y.csv``, ``images/`` with ``masks/`` and ``Images/NNN.png`` with
    ``Labels/NNN_mask.png`` on their own. ``series``: the SeriesInstanceUID chosen in a DICOM
    folder; that input's outputs are named after the series, not the folder (``<folder>__<UID>``
    when several DICOM folders are listed).
    """
    urls = _dicomweb_urls(source)
    if urls is not None:  # a study/series/query URL, or a CSV list of them (liverseg.infer.dicomweb)
        if labels is not None:
            raise UsageError(f"--labels: not taken with DICOMweb inputs ({source})")
        if series is not None:
            raise UsageError(f"--series: a DICOMweb URL names its series itself (.../studies/UID/series/UID): {source}")
        return _url_items(urls, limit)
    src = Path(source)
    if not src.exists():
        raise UsageError(
            f"{src}: input not found (expected an image, a volume, a DICOM series folder, a CSV list or a folder)"
        )
    lab = Path(labels) if labels is not None else None
    if lab is not None:
        if not lab.exists():
            raise UsageError(f"{lab}: labels not found (expected a mask file, a *_y.csv or a folder of masks)")
        if src.is_dir() and lab.is_file() and not _is_dicom_dir(src):
            raise UsageError(
                f"{lab}: a label CSV pairs row by row with an image CSV; for the folder {src} "
                "pass a folder of masks as --labels"
            )
    try:
        samples = _samples(src, lab, root)
    except DataError as e:
        raise UsageError(str(e)) from None
    if src.is_dir():  # the tool's own outputs (this run's --out, earlier run folders) are never inputs
        inner = [p for p in exclude or [] if _inside(p, [os.path.realpath(src) + os.sep]) and not _same(p, src)]
        skip = [os.path.realpath(p) + os.sep for p in [*inner, *run_folders_under(src)]]
        if skip:
            samples = [s for s in samples if not _inside(s.image, skip)]
            if not samples:
                raise UsageError(f"{src}: no inputs outside the run folders it holds")
    if limit is not None:
        samples = samples[: max(0, int(limit))]
    images = [str(s.image) for s in samples]
    masks = [None if s.mask is None else str(s.mask) for s in samples]
    del samples  # the Path-based samples are transient; only the compact Items stay
    keys = output_keys(images)
    items = [Item(i, x, y, k, input_kind(x)) for i, (x, y, k) in enumerate(zip(images, masks, keys))]
    if series is not None:
        dicom = [it for it in items if it.kind == "dicom"]
        for it in dicom:
            key = _safe(series) if len(dicom) == 1 else f"{it.key}__{_safe(series)}"
            items[it.index] = dataclasses.replace(it, key=key)
    return items


def _dicomweb_urls(source: str | os.PathLike) -> list[str] | None:
    """The ``dicomweb+`` URLs ``source`` is or lists (a CSV of them), else None."""
    from liverseg.infer.dicomweb import is_dicomweb, urls_in_csv

    if is_dicomweb(source):
        return [str(source)]
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        try:
            return urls_in_csv(src)
        except DataError as e:
            raise UsageError(str(e)) from None
    return None


def _url_items(urls: list[str], limit: int | None) -> list[Item]:
    """One Item per CT series the URLs name (kind ``dicomweb``), keyed by series UID."""
    from liverseg.infer.dicomweb import list_urls

    found = list_urls(urls)[: None if limit is None else max(0, int(limit))]
    keys = output_keys([name for _, name in found])
    return [Item(i, url, None, k, "dicomweb") for i, ((url, _), k) in enumerate(zip(found, keys))]


def is_url(path: str) -> bool:
    """True for an input that is a URL (a ``dicomweb+`` series), not a path."""
    return "://" in path


def input_kind(path: str) -> str:
    """``volume`` for a volume file name, ``dicom`` for a folder, ``dicomweb`` for a URL, else ``image``."""
    if is_url(path):
        return "dicomweb"
    if is_volume_path(path):
        return "volume"
    if os.path.isdir(path) and Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return "dicom"
    return "image"  # a folder named like an image fails as such when read


def _is_dicom_dir(folder: Path) -> bool:
    return is_dicom_folder(folder)


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_volume_path(p) and not p.name.startswith("."))


def volume_stem(path: str | os.PathLike[str]) -> str:
    """``case_0000.nii.gz`` -> ``case_0000``: the file name without its volume or image suffix."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _label_for(volume: Path, labels: Path) -> Path | None:
    """The mask of ``volume`` in the folder ``labels``: the same name, or without nnU-Net's ``_0000`` channel."""
    stem = volume_stem(volume)
    wanted = {stem, stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem}
    for p in _volume_files(labels):
        if volume_stem(p) in wanted:
            return p
    return None


def _samples(src: Path, labels: Path | None, root: str | os.PathLike | None) -> list[Sample]:
    """Samples of a single file, a volume folder, a DICOM folder, or what :func:`discover` reads."""
    if src.is_file() and src.suffix.lower() != ".csv":
        if not (is_volume_path(src) or src.suffix.lower() in IMAGE_EXTENSIONS):
            raise DataError(
                f"{src}: not an input liverseg reads (an image {', '.join(IMAGE_EXTENSIONS)}, a volume "
                f"{', '.join(VOLUME_SUFFIXES)}, a DICOM series folder or a CSV list)"
            )
        if labels is not None and labels.is_dir():
            raise DataError(f"{labels}: for the single input {src} pass the mask file itself as --labels")
        return [Sample(src, labels, "")]
    if src.is_dir():
        has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in src.rglob("*") if p.is_file())
        volumes = _volume_files(src)
        if volumes and not has_images:
            label_dir = labels if labels is not None and labels.is_dir() else None
            in_labels = {p.resolve() for p in _volume_files(label_dir)} if label_dir else set()
            return [
                Sample(v, _label_for(v, label_dir) if label_dir else None, f"{src.name}/")
                for v in volumes
                if v.resolve() not in in_labels
            ]
        if not has_images and _is_dicom_dir(src):
            return [Sample(src, labels, "")]
    return discover(src, labels, root)


def ignored_files(
    folder: Path, items: list[Item] | None = None, exclude: list[Path] | None = None, limit: int = 100
) -> tuple[int, list[str]]:
    """Entries of a folder input that are not inputs, each with its reason (count, first few).

    A file without an image extension; a mask file (``*_mask.*``) with no image of its
    stem beside it; a file with an image extension that is neither an input nor a label
    of one. The run's own output folders (``exclude``) are not walked.
    """
    used: set[str] = set()
    for it in items or []:
        used.add(os.path.abspath(it.image))
        if it.label:
            used.add(os.path.abspath(it.label))
    skip = [os.path.realpath(p) + os.sep for p in exclude or []]
    skip += [os.path.realpath(it.image) + os.sep for it in items or [] if os.path.isdir(it.image)]  # DICOM series
    n = 0
    names: list[str] = []
    real_folder = os.path.realpath(folder)
    for p in sorted(folder.rglob("*")):
        if p.name.startswith("."):
            continue
        # rglob does not enter linked folders: only a link itself resolves anywhere but below the folder
        real = os.path.realpath(p) if p.is_symlink() else os.path.join(real_folder, p.relative_to(folder))
        if any((real + os.sep).startswith(f) for f in skip):
            continue
        if p.is_dir() and not p.is_symlink() and p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        why = None
        if is_volume_path(p):
            if items is not None and os.path.abspath(p) not in used:
                why = "a volume in a folder of image slices (run volumes on their own)"
        elif p.suffix.lower() not in IMAGE_EXTENSIONS:
            if p.is_file():
                why = "no image extension"
        elif os.path.abspath(p) not in used and items is not None:
            stem = p.stem
            if stem.endswith("_mask"):
                why = f"a mask with no image {stem[: -len('_mask')]}.* beside it"
            else:
                why = "named like an image but neither an input nor a label of one"
        if why is None:
            continue
        n += 1
        if len(names) < limit:
            names.append(f"{p} ({why})")
    return n, names


def _safe(part: str) -> str:
    out = "".join(c if (c.isalnum() or c in "-_.+=@,") else "_" for c in part)
    return out.strip(".") or "_"


def output_keys(paths: list[str] | list[Path]) -> list[str]:
    """Unique, deterministic output keys for the inputs (rule in the module docstring)."""
    stems = [_safe(volume_stem(p)) for p in paths]
    # Parent folders only for inputs whose stem collides (computed lazily: most runs have none).
    parents: dict[int, tuple[str, ...]] = {}

    def parents_of(i: int) -> tuple[str, ...]:
        if i not in parents:
            parents[i] = Path(os.path.abspath(paths[i])).parts[1:-1]  # without the filesystem root
        return parents[i]

    def label(i: int, depth: int) -> str:
        par = parents_of(i)
        d = min(depth, len(par))
        return "__".join([*(_safe(q) for q in par[len(par) - d :]), stems[i]])

    keys = list(stems)
    groups: dict[str, list[int]] = {}
    for i, st in enumerate(stems):
        groups.setdefault(st.casefold(), []).append(i)
    for idxs in groups.values():
        if len(idxs) < 2:
            continue
        best_depth, best_n = 0, 1
        for depth in range(1, max(len(parents_of(i)) for i in idxs) + 1):
            n = len({label(i, depth).casefold() for i in idxs})
            if n > best_n:
                best_depth, best_n = depth, n
            if n == len(idxs):
                break
        for i in idxs:
            keys[i] = label(i, best_depth)
    # Still colliding: the same stem in the same folder (001.png beside 001.jpg, or a file listed twice).
    counts = Counter(k.casefold() for k in keys)
    for i, k in enumerate(keys):
        if counts[k.casefold()] > 1:
            keys[i] = f"{k}__{_safe(Path(paths[i]).suffix.lstrip('.')) or 'noext'}"
    seen: Counter[str] = Counter()
    out = []
    for k in keys:
        seen[k.casefold()] += 1
        out.append(k if seen[k.casefold()] == 1 else f"{k}__{seen[k.casefold()]}")
    if len({k.casefold() for k in out}) != len(out):  # a derived key met another input's plain stem
        seen.clear()
        fixed = []
        for k in out:
            seen[k.casefold()] += 1
            fixed.append(k if seen[k.casefold()] == 1 else f"{k}__{seen[k.casefold()]}")
        out = fixed
    return out


def inputs_digest(items: list[Item]) -> str:
    """SHA-256 of the input list (paths, labels, keys): a resumed run must see the same list."""
    h = hashlib.sha256()
    for it in items:
        label = os.path.abspath(it.label) if it.label else ""
        image = it.image if is_url(it.image) else os.path.abspath(it.image)
        h.update(f"{it.index}\t{image}\t{label}\t{it.key}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- decoding


@dataclass
class Loaded:
    """A decoded input (or the reason it could not be decoded).

    A 2D slice is ``slice`` (:class:`liverseg.predict.predictor.SliceInput`: the model's pixels
    and the slice on its own grid); a volume is ``volume``
    (:class:`liverseg.predict.predictor.VolumeInput`, its slices prepared behind).
    """

    item: Item
    slice: SliceInput | None = None
    truth: np.ndarray | None = None  # bool [H, W]
    error: str | None = None
    label_error: str | None = None
    t0: float = 0.0  # perf_counter when decoding started
    volume: VolumeInput | None = None
    notes: list[str] | None = None  # what was assumed or done beyond the rules (per_image.csv ``notes``)
    stat: list[int] | None = None  # the input's [size, mtime_ns] before it was read: --resume redoes it if changed

    @property
    def pixels(self) -> np.ndarray:
        """The model's input; only for a slice that decoded (``error`` is None)."""
        if self.slice is None:
            raise ValueError(f"{self.item.image}: not decoded ({self.error})")
        return self.slice.pixels

    @property
    def original(self) -> np.ndarray:
        """The slice on its own grid (what masks, overlays and metrics use)."""
        return self.pixels if self.slice is None else self.slice.gray


def load(item: Item, prep: Prep | None = None) -> Loaded:
    """Decode an input and its label; a bad file becomes ``error``, never an exception.

    ``prep`` (:class:`liverseg.predict.predictor.Prep`) gives the intensity rule, the HU
    window, the spacings, and how volumes are read; None: the defaults.
    """
    prep = prep if prep is not None else Prep()
    out = Loaded(item, t0=time.perf_counter(), stat=input_stat(item))
    if item.is_volume:
        try:
            out.volume = load_volume(item.image, item.label, item.kind, prep)
        except DataError as e:
            out.error = str(e)
        except MemoryError:
            out.error = f"{item.image}: not enough memory to read this volume"
        except Exception as e:  # anything a reader throws on a hostile file
            out.error = f"{item.image}: cannot read volume ({describe(e)})"
        return out
    notes: list[str] = []
    try:
        image = read_slice(item.image, prep, notes)
    except DataError as e:
        out.error = str(e)
        return out
    except Exception as e:  # anything Pillow throws on hostile files
        out.error = f"{item.image}: cannot read image ({describe(e)})"
        return out
    out.slice = prepare_slice(image, prep, notes)
    out.notes = notes or None
    if item.label is not None:
        try:
            truth = read_mask(item.label, prep.max_pixels)
            if truth.shape != image.shape:
                raise DataError(
                    f"{item.label}: label is {truth.shape[1]}x{truth.shape[0]} but image "
                    f"{item.image} is {image.shape[1]}x{image.shape[0]} (width x height)"
                )
            out.truth = truth
        except DataError as e:
            out.label_error = str(e)
        except Exception as e:
            out.label_error = f"{item.label}: cannot read label ({describe(e)})"
    return out


def input_stat(item: Item) -> list[int] | None:
    """[size, mtime_ns] of an input (and its label: an edit of either changes it), or None when unreadable.

    A DICOM series folder counts its files: size = total bytes, mtime = the newest.
    """
    total, newest = 0, 0
    if is_url(item.image):  # a server's series has no size or time to compare
        return None
    try:
        paths = [item.image] + ([item.label] if item.label else [])
        for p in paths:
            if os.path.isdir(p):
                for dirpath, _, names in os.walk(p):
                    for n in names:
                        st = os.stat(os.path.join(dirpath, n))
                        total, newest = total + st.st_size, max(newest, st.st_mtime_ns)
            else:
                st = os.stat(p)
                total, newest = total + st.st_size, max(newest, st.st_mtime_ns)
    except OSError:
        return None
    return [total, newest]


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(height, width) from the file header alone, or None when unreadable (or not a regular file)."""
    try:
        if not os.path.isfile(path):  # never open a FIFO: it would block
            return None
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:
        return None


# ---------------------------------------------------------------- writing


# ---------------------------------------------------------------- per_image.csv


def csv_line(row: dict[str, Any]) -> str:
    """One per_image.csv line (RFC 4180 quoting) in :data:`PER_IMAGE_COLUMNS` order."""
    cells = []
    for c in PER_IMAGE_COLUMNS:
        v = row.get(c)
        s = "" if v is None else (repr(v) if isinstance(v, float) else str(v))
        if any(ch in s for ch in ',"\n\r'):
            s = '"' + s.replace('"', '""') + '"'
        cells.append(s)
    return ",".join(cells) + "\n"
