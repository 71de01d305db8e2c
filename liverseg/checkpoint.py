"""Stable public names for checkpoints; the implementation is :mod:`liverseg.models.checkpoint`."""

from liverseg.models.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    file_sha256,
    latest_run_checkpoint,
    load_checkpoint,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "file_sha256",
    "latest_run_checkpoint",
    "load_checkpoint",
]
