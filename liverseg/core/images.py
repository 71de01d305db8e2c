"""One reader for every way the study and its users name data.

Inputs (see :func:`discover`):

* the study's CSV lists: ``*_x.csv`` (header ``X``), paired with the ``*_y.csv``
  (header ``Y``) of the same stem when it exists; a pairs CSV with columns ``X,Y``;
  a ``*_y.csv`` alone is an error;
* folders: ``images/`` + ``masks/`` with matching stems; ``Images/`` + ``Labels/`` with
  the study's ``_mask`` suffix (either layout whether the parent folder or the images
  folder itself is given); one folder holding ``NNN.png`` and ``NNN_mask.png``;
  any other folder is read as images only (recursively, by extension).

Relative paths in a CSV resolve against the data root (default: the current
directory, as the study ran), then against the CSV's own folder.

Pixels (see :func:`read_image`, :func:`read_mask`):

* PNG, JPEG, TIFF, BMP; 8- or 16-bit; grayscale or RGB(A).
* RGB is converted to gray with ITU-R 601 luma (Pillow's ``convert("L")``), as the
  study's loader did; R=G=B images come out unchanged.
* 16-bit and float images are read by :mod:`liverseg.core.intensity`: CT numbers
  (signed HU, or HU+1024 as 12-bit CT exports store them) are windowed like CT volumes
  (default window [0, 255] HU, the PNG sets' rule); a genuine 16-bit gray image is
  scaled to 0..255 (value / 257); values that fit no rule are refused with the reason.
* Masks are binarised: a pixel is liver when it is >= half the format's full scale
  (128 of 255, 32768 of 65535), which survives JPEG edge noise. A label map whose
  largest value is below that (0/1, or 0/1/2 with tumour as 2) counts every non-zero
  pixel as liver.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from liverseg.core.errors import DataError
from liverseg.core.intensity import check_windowed, interpret, window_to_gray

if TYPE_CHECKING:
    import pandas as pd


DEFAULT_WINDOW_HU = (0.0, 255.0)  # the PNG sets' rule: HU clipped to [0, 255]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIX = "_mask"
# The folders of masks beside an ``images/`` (or ``Images/``) folder, found whether the parent or the
# images folder itself is given.
LABEL_DIRS = ("masks", "Labels", "labels", "Masks")
# Images larger than this are refused from their header, before any pixel is decoded: a
# 300 KB PNG can declare 17000 x 17000 pixels (289 M), and Pillow only warns below 537 M.
# 8192 x 8192 is 64 times a 1024-pixel CT slice; --max-pixels changes it.
DEFAULT_MAX_PIXELS = 8192 * 8192
# Pillow's own check (a warning on stderr, then an error at twice the limit) is replaced by
# the one in _open, which names the file and the limit and never prints.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Sample:
    """One image, its mask if known, and where it was named (CSV row or folder)."""

    image: Path
    mask: Path | None = None
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.image}" + (f" ({self.origin})" if self.origin else "")


# ---------------------------------------------------------------- pixels


def _to_gray(
    img: Image.Image,
    path: Path,
    intensity: str,
    window: tuple[float, float],
    decoded: np.ndarray | None = None,
    check_ct: bool = False,
    estimate_window: bool = False,
    notes: list[str] | None = None,
) -> np.ndarray:
    gray = _gray(img, path, intensity, window, decoded, check_ct)
    if check_ct:
        from liverseg.core.ctcheck import ALLOW_HINT, label_map_problem

        why = label_map_problem(gray)
        if why is not None:
            raise DataError(f"{path}: {why}; {ALLOW_HINT}")
    if estimate_window and img.mode not in _WIDE_MODES:  # 8-bit as stored: its window is the exporter's
        from liverseg.core.intensity import restretch

        gray, note = restretch(gray)
        if note is not None and notes is not None:
            notes.append(note)
    return gray


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")


def _gray(
    img: Image.Image, path: Path, intensity: str, window: tuple[float, float], decoded: np.ndarray | None, check: bool
) -> np.ndarray:
    mode = img.mode
    if mode in _WIDE_MODES:
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise DataError(f"{path}: unsupported {mode} image with shape {arr.shape}")
        if arr.dtype.kind == "i" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # Pillow widens 16-bit to int32 ("I"); the rule reads it as stored
        kind = interpret(arr, intensity, str(path))
        if check:
            from liverseg.core.ctcheck import check_ct

            check_ct(arr, kind, str(path))
        gray = window_to_gray(arr, kind, window, str(path))
        check_windowed(gray, arr, kind, window, str(path))
        return gray
    if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "1", "L"):
        if intensity in ("hu", "hu+1024"):
            raise DataError(f"{path}: an 8-bit image cannot hold {intensity} CT numbers; use --intensity gray or auto")
        if decoded is not None:
            return decoded
        if check and mode not in ("L", "1", "LA"):
            from liverseg.core.ctcheck import ALLOW_HINT, colour_problem

            why = colour_problem(np.asarray(img if mode in ("RGB", "RGBA") else img.convert("RGB")))
            if why is not None:
                raise DataError(f"{path}: {why}; {ALLOW_HINT}")
        return np.asarray(img if mode == "L" else img.convert("L"), dtype=np.uint8)
    raise DataError(f"{path}: unsupported image mode {mode!r} (channels {img.getbands()})")


def _open(path: Path, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, np.ndarray | None]:
    """The image at ``path``, decoded, and its pixels when they were decoded straight into an array."""
    path = Path(path)
    problem = not_a_file(path, what)
    if problem:
        raise DataError(problem)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} file is empty (0 bytes)")
    try:
        img = Image.open(path)  # reads the header only
    except PermissionError as e:
        raise DataError(f"{path}: {what} cannot be read: permission denied ({e.strerror})") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: {what} is not a readable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: {what} is corrupt or truncated ({e})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise DataError(
            f"{path}: {what} declares {w} x {h} = {w * h / 1e6:.0f} M pixels, over the limit of "
            f"{max_pixels / 1e6:.0f} M (a decompression bomb or not a CT slice); refused before decoding "
            "(--max-pixels raises the limit)"
        )
    target = _gray_target(img)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        img.close()
        raise DataError(f"{path}: {what} is corrupt or truncated ({e})") from None
    if target is None or img.im is not target[1]:  # not mapped, or Pillow decoded elsewhere: copied later
        return img, None
    return img, target[0]


def _gray_target(img: Image.Image) -> tuple[np.ndarray, object] | None:
    """Point a single-frame 8-bit gray PNG's memory at a new array before it is decoded, or None.

    ``np.asarray(img)`` copies decoded pixels through ``Image.tobytes``: 0.47 of the 2.2 ms
    a 512x512 CT slice took to read (2-vCPU AMD EPYC, Pillow 13). Pillow decodes into the
    memory an image already has, so an image mapped onto a numpy array
    (``Image.frombuffer``) receives the pixels there, with no copy. Only PNG, the format
    whose loader was checked to keep that memory; :func:`_open` falls back to the copy if
    a Pillow version replaces it.
    """
    if img.format != "PNG" or img.mode != "L" or getattr(img, "n_frames", 1) != 1:
        return None
    w, h = img.size
    array = np.empty((h, w), dtype=np.uint8)
    core = Image.frombuffer("L", (w, h), array, "raw", "L", 0, 1).im
    img.im = core
    return array, core


def read_image(
    path: str | os.PathLike,
    *,
    intensity: str = "auto",
    window: tuple[float, float] = DEFAULT_WINDOW_HU,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    notes: list[str] | None = None,
    check_ct: bool = False,
    estimate_window: bool = False,
) -> np.ndarray:
    """uint8 [H, W] gray image (rules in the module docstring and :mod:`liverseg.core.intensity`).

    A multi-page file (TIFF) gives its first page; ``notes``, when given, receives a line
    saying so (the runner puts it in the row's ``notes``). ``check_ct``: refuse colour
    images, label maps and MR-like numbers (:mod:`liverseg.core.ctcheck`), as inference does.
    ``estimate_window``: an 8-bit image exported in a wide window is stretched to what the
    model knows (:func:`liverseg.core.intensity.restretch`; the note says so), as inference does.
    """
    path = Path(path)
    img, decoded = _open(path, "image", max_pixels)
    with img:
        pages = int(getattr(img, "n_frames", 1) or 1)
        if pages > 1 and notes is not None:
            notes.append(
                f"{pages} pages: only the first was read (save a stack as a NIfTI volume to segment every slice)"
            )
        return _to_gray(img, path, intensity, window, decoded, check_ct, estimate_window, notes)


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bool [H, W] liver mask (binarisation rule in the module docstring)."""
    path = Path(path)
    img, decoded = _open(path, "mask", max_pixels)
    with img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.int64)
            full = 65535
        else:  # compared as uint8: no wider copy (a 512x512 mask: 1.0 -> 0.7 ms), none if decoded into an array
            arr = decoded if decoded is not None else np.asarray(img if img.mode == "L" else img.convert("L"))
            full = 255
    half = (full + 1) // 2
    if arr.max(initial=0) < half:
        return arr > 0
    return arr >= half


# ---------------------------------------------------------------- naming


def _resolve(value: object, csv_path: Path, row: int, column: str, root: Path | None) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{csv_path}: row {row}: column {column} is empty")
    p = Path(value.strip())
    if p.is_absolute():
        return p
    candidates = [(root or Path.cwd()) / p, csv_path.parent / p]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


@dataclass(frozen=True)
class Table:
    """A CSV read as strings: its stripped header and its rows, each as long as the header."""

    columns: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def read_table(path: Path) -> Table:
    """A CSV of strings (the standard library's reader: the base install has no pandas).

    Read as the study's ``pd.read_csv(dtype=str, keep_default_na=False)`` read it: blank lines
    skipped, a short row padded with empty values, a row longer than the header refused. An
    unreadable, empty or malformed file is a DataError naming it.
    """
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [r for r in csv.reader(f) if any(v.strip() for v in r)]
    except FileNotFoundError:
        raise DataError(f"{path}: CSV file not found") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    if not lines:
        raise DataError(f"{path}: CSV file is empty (no header)")
    columns = [c.strip() for c in lines[0]]
    rows = []
    for n, r in enumerate(lines[1:], start=2):
        if len(r) > len(columns):
            raise DataError(f"{path}: not a readable CSV (row {n} has {len(r)} fields, the header {len(columns)})")
        rows.append(r + [""] * (len(columns) - len(r)))
    return Table(columns, rows)


def read_csv(path: Path) -> pd.DataFrame:
    """:func:`read_table` as a pandas DataFrame of strings (the study's commands: split, manifests)."""
    import pandas as pd  # here, not at the top: inference never needs it (the [study] extra installs it)

    t = read_table(path)
    return pd.DataFrame(t.rows, columns=t.columns, dtype=str)


def first_column(t: Table, path: Path, name: str) -> Table:
    """A list without the study's ``X``/``Y`` header, read as the study read it: its first column.

    A header that is itself an image path means the file has no header; that line is an
    entry too (the study's ``pd.read_csv`` would have taken it as the header and skipped it).
    One note says which reading was used.
    """
    if len(t.columns) == 0:
        raise DataError(f"{path}: no columns")
    head = t.columns[0]
    rows = [r[0] for r in t.rows]
    if Path(head).suffix.lower() in IMAGE_EXTENSIONS:
        rows = [head, *rows]
        note = f"no header; reading the first column as the {name} list, its first line included"
    else:
        note = f"header {t.columns} has no {name}; reading the first column ({head!r}) as the study did"
    logging.getLogger(__name__).warning("%s: %s", path, note)
    return Table([name], [[v] for v in rows])


def partner_csv(x_csv: Path) -> Path | None:
    """``test_x.csv`` -> ``test_y.csv`` (and ``X.csv`` -> ``Y.csv``) when it exists."""
    name = x_csv.name
    for a, b in (("_x.csv", "_y.csv"), ("_X.csv", "_Y.csv"), ("x.csv", "y.csv"), ("X.csv", "Y.csv")):
        if name.endswith(a):
            cand = x_csv.with_name(name[: -len(a)] + b)
            if cand.exists():
                return cand
    return None


def read_csv_list(
    path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    need_labels: bool = False,
) -> list[Sample]:
    """Samples named by a study-style CSV (``X``, ``X,Y``, or ``X`` + partner ``Y`` CSV)."""
    path = Path(path)
    rootp = Path(root) if root is not None else None
    df = read_table(path)
    if "X" not in df.columns:
        if "Y" in df.columns:
            raise DataError(f"{path}: has only a Y column; pass the *_x.csv (images) and the *_y.csv as labels")
        df = first_column(df, path, "X")
    if len(df.rows) == 0:
        raise DataError(f"{path}: the list is empty (header only)")
    xs = [_resolve(v, path, i + 2, "X", rootp) for i, v in enumerate(df.column("X"))]
    ys: list[Path | None]
    if "Y" in df.columns:
        ys = [_resolve(v, path, i + 2, "Y", rootp) for i, v in enumerate(df.column("Y"))]
    else:
        ycsv = Path(labels) if labels is not None else partner_csv(path)
        if ycsv is not None and ycsv.is_dir():
            return _attach_folder_labels(
                [Sample(x, None, f"{path.name} row {i + 2}") for i, x in enumerate(xs)], ycsv, need_labels
            )
        if ycsv is None:
            if need_labels:
                raise DataError(f"{path}: no labels: no Y column and no partner *_y.csv next to it")
            return [Sample(x, None, f"{path.name} row {i + 2}") for i, x in enumerate(xs)]
        ydf = read_table(ycsv)
        if "Y" not in ydf.columns:
            ydf = first_column(ydf, ycsv, "Y")
        if len(ydf.rows) != len(df.rows):
            raise DataError(
                f"{ycsv}: has {len(ydf.rows)} rows but {path} has {len(df.rows)}; the lists must pair row by row"
            )
        ys = [_resolve(v, ycsv, i + 2, "Y", rootp) for i, v in enumerate(ydf.column("Y"))]
    return [Sample(x, y, f"{path.name} row {i + 2}") for i, (x, y) in enumerate(zip(xs, ys))]


def _images_in(folder: Path, recursive: bool = True) -> list[Path]:
    """Entries named like images. Not only regular files: a broken link, a link loop, a FIFO or a
    folder named ``x.png`` is listed too, so that reading it fails with its reason instead of the
    entry vanishing from the run."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def not_a_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as a file (missing, broken link, link loop, folder, FIFO...), or None."""
    try:
        st = path.stat()  # follows links
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path}: {what} is a broken symbolic link (to {os.readlink(path)})"
        return f"{path}: {what} file not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path}: {what} is a symbolic link loop"
        if e.errno == errno.EACCES:
            return f"{path}: {what} cannot be read: permission denied"
        return f"{path}: {what} cannot be read ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: {what} path is a folder, not an image"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file (a socket or device)"
        return f"{path}: {what} is {kind}; refused without reading"
    return None


def _by_stem(files: list[Path], strip_suffix: str = "") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        stem = f.stem
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        out.setdefault(stem, f)
    return out


def _attach_folder_labels(samples: list[Sample], label_dir: Path, need_labels: bool) -> list[Sample]:
    labels = _images_in(label_dir)
    plain = _by_stem(labels)
    suffixed = _by_stem([f for f in labels if f.stem.endswith(MASK_SUFFIX)], MASK_SUFFIX)
    out = []
    for s in samples:
        stem = s.image.stem
        m = suffixed.get(stem) or plain.get(stem)
        if m is None and need_labels:
            raise DataError(f"{s.image}: no mask named {stem}{MASK_SUFFIX}.* or {stem}.* in {label_dir}")
        out.append(Sample(s.image, m, s.origin))
    return out


def _case_dir(folder: Path, *names: str) -> Path | None:
    for n in names:
        if (folder / n).is_dir():
            return folder / n
    return None


def read_folder(
    folder: str | os.PathLike, labels: str | os.PathLike | None = None, need_labels: bool = False
) -> list[Sample]:
    """Samples in a folder layout (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    img_dir = _case_dir(folder, "images", "Images")
    if img_dir is not None:
        label_dir = Path(labels) if labels is not None else _case_dir(folder, *LABEL_DIRS)
        samples = [Sample(p, None, f"{img_dir.name}/") for p in _images_in(img_dir)]
    else:
        files = _images_in(folder)
        masks = [f for f in files if f.stem.endswith(MASK_SUFFIX)]
        mask_set = set(masks)
        samples = [Sample(p, None, f"{folder.name}/") for p in files if p not in mask_set]
        label_dir = Path(labels) if labels is not None else None
        if label_dir is None and folder.name in ("images", "Images"):  # the images/ folder itself was given
            label_dir = _case_dir(folder.parent, *LABEL_DIRS)
        if label_dir is None and masks:
            by = _by_stem(masks, MASK_SUFFIX)
            samples = [Sample(s.image, by.get(s.image.stem), s.origin) for s in samples]
            if need_labels:
                for s in samples:
                    if s.mask is None:
                        raise DataError(f"{s.image}: no {s.image.stem}{MASK_SUFFIX}.* beside it")
    if not samples:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    if label_dir is not None:
        samples = _attach_folder_labels(samples, label_dir, need_labels)
    elif need_labels and any(s.mask is None for s in samples):
        raise DataError(f"{folder}: no masks found (expected masks/, Labels/ or NNN_mask.png files)")
    return samples


def discover(
    source: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    need_labels: bool = False,
) -> list[Sample]:
    """Samples from a CSV (study list or pairs) or a folder; labels found automatically."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source, labels, need_labels)
    if source.suffix.lower() == ".csv":
        return read_csv_list(source, labels, root, need_labels)
    if not source.exists():
        raise DataError(f"{source}: not found")
    raise DataError(f"{source}: expected a CSV list or a folder of images")


def read_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image [H, W], bool mask [H, W]); a size mismatch names both files."""
    if sample.mask is None:
        raise DataError(f"{sample}: no mask for this image")
    try:
        img = read_image(sample.image)
        mask = read_mask(sample.mask)
    except DataError as e:  # name where the file was listed (CSV row or folder), once
        if sample.origin and sample.origin not in str(e):
            raise DataError(f"{e} ({sample.origin})") from None
        raise
    if img.shape != mask.shape:
        raise DataError(
            f"{sample}: image is {img.shape[1]}x{img.shape[0]} but mask {sample.mask} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height)"
        )
    return img, mask


def check_samples(samples: list[Sample]) -> None:
    """Read every pair once; raise on the first bad one (before any training work)."""
    for s in samples:
        read_pair(s)


_GROUP_RE_DEFAULT = r"(?:volume|vol|case|patient)[-_]?(\d+)"


def group_of(path: Path, pattern: str = _GROUP_RE_DEFAULT) -> str:
    """Patient id from a file name by regex (first group), for grouped splits."""
    m = re.search(pattern, str(path))
    if not m:
        raise DataError(f"{path}: group pattern {pattern!r} does not match the file name")
    return m.group(1) if m.groups() else m.group(0)
