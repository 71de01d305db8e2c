"""numpy's transparent-huge-page advice, turned off where liverseg fills large arrays.

numpy ``madvise``s every array of 4 MB or more for transparent huge pages. Where the
kernel compacts memory on the spot for such regions (``defrag: madvise``, the usual
default), the first touch of each page can cost far more than the copy into it: on a
2-vCPU AMD EPYC VM a fresh 157 MB array took 0.82 s to fill with the advice and 0.09 s
without, and a 512x512x300 DICOM series through ``liverseg-infer`` 12.4 s against 9.7 s
(the Python API: 10.1-13.2 s against 9.4-9.9 s per series). liverseg works slice by
slice, so huge pages buy it nothing.

* :func:`prefer_small_pages` turns the advice off for the rest of the process: the
  commands call it (the process is theirs).
* :func:`small_pages` turns it off for the duration of a block and puts numpy's setting
  back after the last such block in any thread has ended: the Python API (a library
  leaves numpy's global state as it found it).

``NUMPY_MADVISE_HUGEPAGE`` set by the user wins over both.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"

_lock = threading.Lock()
_users = 0
_saved: bool | None = None


def _switch() -> Callable[[bool], bool] | None:
    """numpy's runtime switch for ``NUMPY_MADVISE_HUGEPAGE`` (returns the previous value), or None."""
    if HUGEPAGE_ENV in os.environ:
        return None
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy._core since 2.0, numpy.core before
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


def prefer_small_pages() -> bool:
    """Turn numpy's huge-page advice off for this process; True when it was turned off here."""
    switch = _switch()
    if switch is None:
        return False
    switch(False)
    return True


@contextmanager
def small_pages() -> Iterator[None]:
    """No huge-page advice inside the block; numpy's own setting again once no thread is inside one."""
    global _users, _saved
    switch = _switch()
    if switch is None:
        yield
        return
    with _lock:
        if _users == 0:
            _saved = switch(False)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                switch(_saved)
                _saved = None
