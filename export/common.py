"""What every exporter starts from: the pipeline, its contract and an example input.

:func:`prepare_export` is the one prologue of :func:`liverseg.export.onnx.export_onnx`
and :func:`liverseg.export.torchscript.export_torchscript`: it identifies the
checkpoint file, builds the pipeline that is exported and the contract that travels
inside the file, and draws the example input the exporter traces with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverseg.core.contract import build_contract, file_sha256
from liverseg.models.checkpoint import Checkpoint

# Where each backend does the padding, in the contract's words.
_PADDING_WHERE = {"onnx": "inside the graph", "torchscript": "inside the module"}


@dataclass
class ExportInputs:
    """The pipeline to export, the contract to store with it, and the example input to trace with."""

    pipeline: nn.Module
    contract: dict[str, Any]
    example: torch.Tensor


def example_input(
    shape: tuple[int, int, int, int] = (1, 1, 256, 256), raw: bool = False, seed: int = 0
) -> torch.Tensor:
    """A random input of the exported dtype (uint8 gray, or float32 HU when ``raw``)."""
    g = torch.Generator().manual_seed(seed)
    if raw:
        return torch.rand(shape, generator=g) * 1400.0 - 1000.0
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def prepare_export(
    ckpt: Checkpoint,
    *,
    backend: str,
    exporter: str,
    threshold: float | None = None,
    raw: bool = False,
    checkpoint_sha256: str | None = None,
    opset: int | None = None,
    example_shape: tuple[int, int, int, int] = (1, 1, 256, 256),
) -> ExportInputs:
    """The fp32 pipeline of ``ckpt``, its contract for ``backend`` (``onnx`` or ``torchscript``) and an example.

    ``checkpoint_sha256`` defaults to the hash of ``ckpt.path`` when that file exists;
    ``exporter`` is recorded in the contract as the tool that wrote the file.
    """
    if checkpoint_sha256 is None and ckpt.path is not None and Path(ckpt.path).is_file():
        checkpoint_sha256 = file_sha256(ckpt.path)
    pipeline = ckpt.build_pipeline(threshold=threshold, raw=raw)  # CheckpointError when the weights do not fit
    contract = build_contract(
        ckpt,
        threshold=threshold,
        raw=raw,
        precision="fp32",
        checkpoint_sha256=checkpoint_sha256,
        opset=opset,
        backend=backend,
    )
    contract["exporter"] = exporter
    after_resize = " (after resize, if any)" if backend == "onnx" else ""
    contract["padding"] = (
        f"{_PADDING_WHERE[backend]}: zero padding on the bottom and right edges to the next multiple of "
        f"{ckpt.preprocessing.pad_multiple}{after_resize}; outputs are cropped back to H x W"
    )
    return ExportInputs(pipeline, contract, example_input(example_shape, raw))
