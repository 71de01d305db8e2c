"""The reference model shipped inside the package: files and the one rule that picks a model.

The folder holds, as package data (so it loads from an installed wheel, not only from a
source checkout):

* ``model.onnx``: the exported U-Net with its full contract (preprocessing, threshold,
  provenance, accuracy gates of its siblings);
* ``model.int8.onnx``: its int8 sibling, used only where its accuracy gate passed;
* ``model.pt``: the liverseg checkpoint (weights and config, no optimiser state), for
  ``liverseg-eval``, ``liverseg-export`` and fine-tuning;
* ``train_config.json``: the training config that made it (``scripts/train_reference.sh``
  reproduces it from ``../shared/data``);
* ``MODEL_CARD.md``: data and its terms, intended use, measured metrics, failure modes.

:func:`resolve_model` is the rule every command and the Python API use when asked for a
model by name: nothing (or ``"reference"``) means the shipped model, ``"latest"`` the
newest export under the runs folder, anything else a path.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["REFERENCE", "LATEST", "folder", "model_path", "checkpoint_path", "card_path", "resolve_model"]

REFERENCE = "reference"
LATEST = "latest"
MODEL_FILE = "model.onnx"
CHECKPOINT_FILE = "model.pt"
CARD_FILE = "MODEL_CARD.md"
CONFIG_FILE = "train_config.json"
RUNS_ENV = "LIVERSEG_RUNS_DIR"  # where runs go, and where "latest" looks (default: ./runs)


def default_runs_dir() -> Path:
    """``$LIVERSEG_RUNS_DIR``, else ``runs`` in the current folder."""
    env = os.environ.get(RUNS_ENV)
    return Path(env) if env else Path("runs")


def folder() -> Path:
    """The package-data folder (a real folder: liverseg is installed unzipped)."""
    return Path(str(resources.files(__name__)))


def _existing(name: str) -> Path | None:
    p = folder() / name
    return p if p.is_file() else None


def model_path() -> Path | None:
    """The shipped ONNX model, or None in a checkout where it was removed."""
    return _existing(MODEL_FILE)


def checkpoint_path() -> Path | None:
    """The shipped checkpoint, or None."""
    return _existing(CHECKPOINT_FILE)


def card_path() -> Path | None:
    """The shipped model card, or None."""
    return _existing(CARD_FILE)


def newest_export(runs_dirs: list[Path]) -> Path | None:
    """The newest ``<runs>/*/export/model.onnx``, or None."""
    found: list[Path] = []
    for d in runs_dirs:
        if d.is_dir():
            found += [p for p in d.glob("*/export/model.onnx") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_model(spec: str | Path | None, runs_dirs: list[Path]) -> tuple[Path | None, str]:
    """(path, how it was chosen) for ``--model SPEC``; path None with the reason when there is none.

    ``None`` or ``"reference"``: the shipped model. ``"latest"``: the newest export under
    ``runs_dirs``. Anything else: a file path, returned as given (the caller checks it).
    """
    if spec is None or str(spec) == REFERENCE:
        found = model_path()
        if found is None:
            return None, f"the reference model is missing from this installation ({folder() / MODEL_FILE})"
        return found, "the reference model shipped with liverseg; MODEL_CARD.md beside it says how well it does"
    if str(spec) == LATEST:
        newest = newest_export(runs_dirs)
        if newest is None:
            return None, "--model latest: no export found under " + ", ".join(
                str(d / "*/export/model.onnx") for d in runs_dirs
            )
        return newest, f"--model latest: newest export in {newest.parent.parent.parent}"
    return Path(spec), "--model"
