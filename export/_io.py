"""Small helpers shared by the exporters: one error type and atomic writes.

Every file the export writes goes first to a hidden temporary name in the target
folder and is renamed over the final name only when it is complete (and, for ONNX,
checked). An interrupted or failed export therefore never leaves a half-written
``model.onnx`` that a later ``liverseg-infer`` could pick up.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class ExportError(ValueError):
    """An export that cannot be done; the message is one line and names the cause."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it is writable; else :class:`ExportError`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder}: output path exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".liverseg-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ExportError(f"{folder}: output folder is not writable ({e.strerror or first_line(e)})") from None
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the suffix (``.onnx``, ``.pt``) because some writers
    look at it. On any exception the temporary file is removed and the final name is
    left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
