"""liverseg: liver segmentation in axial CT slices and volumes.

The Python API (:mod:`liverseg.api`): ``liverseg.segment(image, model=None, ...)``,
``liverseg.Segmenter`` and ``liverseg.Segmentation`` (what ``details=True`` returns). They
are imported on first use, so ``import liverseg`` (which every ``liverseg.*`` module
triggers) stays light and loads no inference engine.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Segmentation", "Segmenter", "__version__", "segment"]

_API = ("Segmentation", "Segmenter", "segment")


def __getattr__(name: str) -> Any:
    # By name, not an import statement: the API sits above the layers that import this package
    # (tests/test_layers.py), and it loads onnxruntime only when it is used.
    if name in _API:
        return getattr(importlib.import_module("liverseg.api"), name)
    raise AttributeError(f"module 'liverseg' has no attribute {name!r}")
