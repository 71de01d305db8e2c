"""Inputs and outputs of the inference runner: listing, naming, decoding, PNG encoding, per_image.csv lines.

Nothing here imports torch: the runner is onnxruntime + numpy + Pillow.

Naming rule (:func:`output_keys`): an input's outputs are named from its file stem
(``Images/000.png`` -> ``masks/000_pred.png``, as the study named predictions). When
two inputs share a stem (compared case-insensitively, so the names also stay distinct
on macOS and Windows), the colliding ones get their parent folder names prepended,
one level at a time (``a/001.png`` -> ``a__001``, ``b/001.png`` -> ``b__001``); if that
never separates them (the same file listed twice, or ``001.png`` beside ``001.jpg``)
the extension and then the occurrence number are appended. The key is therefore a
function of the input path and the input list only, and stable across ``--resume``.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from liverseg.core.data import IMAGE_EXTENSIONS, DataError, discover, read_image, read_mask
from liverseg.core.errors import UsageError, describe

MASK_DIR = "masks"
PROB_DIR = "probabilities"
OVERLAY_DIR = "overlays"
PNG_LEVEL = 1  # zlib level 1: ~4x faster than the default 6 on masks, files ~30% larger

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

    @property
    def mask_name(self) -> str:
        return f"{MASK_DIR}/{self.key}_pred.png"

    @property
    def prob_name(self) -> str:
        return f"{PROB_DIR}/{self.key}_prob.png"

    @property
    def overlay_name(self) -> str:
        return f"{OVERLAY_DIR}/{self.key}_overlay.png"


def list_inputs(
    source: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
) -> list[Item]:
    """The run's inputs, in list order, with labels found as :func:`liverseg.core.data.discover` does.

    ``source``: a study image CSV (``X``), a pairs CSV (``X,Y``) or a folder. ``labels``:
    a ``*_y.csv`` or a folder of masks; without it ``test_x.csv`` pairs with
    ``test_y.csv`` and ``Images/NNN.png`` with ``Labels/NNN_mask.png`` on their own.
    """
    src = Path(source)
    if not src.exists():
        raise UsageError(f"{src}: input not found (expected an image CSV, a pairs CSV or a folder)")
    if labels is not None:
        lab = Path(labels)
        if not lab.exists():
            raise UsageError(f"{lab}: labels not found (expected a *_y.csv or a folder of masks)")
        if src.is_dir() and lab.is_file():
            raise UsageError(
                f"{lab}: a label CSV pairs row by row with an image CSV; for the folder {src} "
                "pass a folder of masks as --labels"
            )
    try:
        samples = discover(src, labels, root)
    except DataError as e:
        raise UsageError(str(e)) from None
    if limit is not None:
        samples = samples[: max(0, int(limit))]
    images = [str(s.image) for s in samples]
    masks = [None if s.mask is None else str(s.mask) for s in samples]
    del samples  # the Path-based samples are transient; only the compact Items stay
    keys = output_keys(images)
    return [Item(i, x, y, k) for i, (x, y, k) in enumerate(zip(images, masks, keys))]


def ignored_files(folder: Path, limit: int = 100) -> tuple[int, list[str]]:
    """Files in a folder input that are skipped for lack of an image extension (count, first few)."""
    n = 0
    names: list[str] = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS and not p.name.startswith("."):
            n += 1
            if len(names) < limit:
                names.append(str(p))
    return n, names


def _safe(part: str) -> str:
    out = "".join(c if (c.isalnum() or c in "-_.+=@,") else "_" for c in part)
    return out.strip(".") or "_"


def output_keys(paths: list[str] | list[Path]) -> list[str]:
    """Unique, deterministic output keys for the inputs (rule in the module docstring)."""
    stems = [_safe(Path(p).stem) for p in paths]
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
        h.update(f"{it.index}\t{os.path.abspath(it.image)}\t{label}\t{it.key}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- decoding


@dataclass
class Loaded:
    """A decoded input (or the reason it could not be decoded)."""

    item: Item
    image: np.ndarray | None = None  # uint8 [H, W]
    truth: np.ndarray | None = None  # bool [H, W]
    error: str | None = None
    label_error: str | None = None
    t0: float = 0.0  # perf_counter when decoding started

    @property
    def pixels(self) -> np.ndarray:
        """The decoded image; only for an input that decoded (``error`` is None)."""
        if self.image is None:
            raise ValueError(f"{self.item.image}: not decoded ({self.error})")
        return self.image


def load(item: Item) -> Loaded:
    """Decode an input and its label; a bad file becomes ``error``, never an exception."""
    out = Loaded(item, t0=time.perf_counter())
    try:
        out.image = read_image(item.image)
    except DataError as e:
        out.error = str(e)
        return out
    except Exception as e:  # anything Pillow throws on hostile files
        out.error = f"{item.image}: cannot read image ({describe(e)})"
        return out
    if item.label is not None:
        try:
            truth = read_mask(item.label)
            if truth.shape != out.image.shape:
                raise DataError(
                    f"{item.label}: label is {truth.shape[1]}x{truth.shape[0]} but image "
                    f"{item.image} is {out.image.shape[1]}x{out.image.shape[0]} (width x height)"
                )
            out.truth = truth
        except DataError as e:
            out.label_error = str(e)
        except Exception as e:
            out.label_error = f"{item.label}: cannot read label ({describe(e)})"
    return out


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(height, width) from the file header alone, or None when unreadable."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:
        return None


# ---------------------------------------------------------------- writing


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] (gray), uint16 [H, W] or uint8 [H, W, 3] (RGB) array."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


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
