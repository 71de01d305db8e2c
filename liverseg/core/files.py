"""Small file-system helpers every layer shares: atomic writes, writable folders, versions.

Every file liverseg writes (checkpoints, model files, masks, reports, JSON) goes first
to a temporary file with a unique name in the target folder, is flushed and fsync'ed,
and is renamed over the final name only when complete. An interrupted or failed write
therefore never leaves a half-written file that a later step could pick up, and two
processes writing the same name never share a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.metadata
import os
import platform
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from liverseg import __version__
from liverseg.core.errors import EXIT_DISK_FULL, LiversegError, first_line

TMP_MARK = ".liverseg-tmp"  # in every temporary name, so stale ones can be found and removed

# Distribution names, in the order versions() lists them (module name in brackets when it differs).
_PACKAGES = (
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("onnxruntime", "onnxruntime-gpu"),
    ("onnxruntime", "onnxruntime"),
    ("onnx", "onnx"),
    ("onnxscript", "onnxscript"),
    ("Pillow", "Pillow"),
    ("pandas", "pandas"),
)


class DiskFullError(LiversegError, OSError):
    """The disk filled up while writing; what was written before is kept."""

    exit_code = EXIT_DISK_FULL


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``, open for writing: (descriptor, its path).

    Created with ``O_EXCL`` under a random name (unique across processes and hosts sharing
    the folder) and mode 0666 less the umask, the permissions any new file gets: nothing
    has to change the process's umask, which would race with other threads.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}{TMP_MARK}{secrets.token_hex(4)}{path.suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, Path]]:
    """A new temporary file beside ``path`` (descriptor, path): renamed over ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is untouched; a full disk
    becomes a :class:`DiskFullError` naming ``path``.
    """
    fd, tmp = _new_temporary(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{path}: disk full while writing ({e.strerror})") from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; fsync it and rename it to ``path`` if the block succeeds.

    The temporary name keeps the suffix (``.onnx``, ``.pt``) because some writers look
    at it. On any exception the temporary file is removed and ``path`` is untouched.
    """
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)  # the block's writer opens the file by its name
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> int:
    """Write ``data`` to ``path`` atomically (as :func:`atomic_path`); returns the byte count.

    One descriptor from creation to rename: 500 new 2.8 kB files took 0.23-0.29 ms each
    through :func:`atomic_path` (create, close, reopen, chmod) and 0.09-0.15 ms this way
    (2-vCPU AMD EPYC, ext4-like overlay, no fsync).
    """
    with _replacing(Path(path)) as (fd, _), open(fd, "wb", closefd=True) as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(fd)
    return len(data)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)
    return Path(path)


def remove_stale_temporaries(folders: list[Path]) -> int:
    """Delete temporary files a killed process left in ``folders`` (they are never complete outputs)."""
    n = 0
    for folder in folders:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and TMP_MARK in p.name:
                    p.unlink(missing_ok=True)
                    n += 1
    return n


def ensure_writable_dir(folder: str | os.PathLike[str], error: type[LiversegError] = LiversegError) -> Path:
    """Create ``folder`` if needed and prove it is writable; else ``error`` naming the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise error(f"{folder}: output path exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-test{TMP_MARK}", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{folder}: output folder is not writable ({e.strerror or first_line(e)})") from None
    return folder


def versions() -> dict[str, str]:
    """Versions of liverseg, Python, the platform and every installed package that can move a result.

    Read from the installed distributions' metadata, so nothing is imported (inference
    never loads torch to report its version); read once per process (10 ms of parsing
    each time, and a run asks twice).
    """
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    out = {"liverseg": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for key, dist in _PACKAGES:
        if key in out:
            continue
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
