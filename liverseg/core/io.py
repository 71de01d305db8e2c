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
import importlib.metadata
import os
import platform
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; fsync it and rename it to ``path`` if the block succeeds.

    The temporary name keeps the suffix (``.onnx``, ``.pt``) because some writers look
    at it. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}{TMP_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        if fsync:
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{path}: disk full while writing ({e.strerror})") from None
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> int:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the byte count."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
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
    never loads torch to report its version).
    """
    out = {"liverseg": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for key, dist in _PACKAGES:
        if key in out:
            continue
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
