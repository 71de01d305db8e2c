"""TorchScript export of the whole pipeline (same inputs, outputs and contract as ONNX).

The pipeline is traced (its padding uses the runtime shape, which the tracer records
as shape arithmetic, so N, H and W stay dynamic) and frozen, and the frozen module is
saved with the contract as the extra file ``liverseg_contract.json``.
``torch.jit.optimize_for_inference`` is *not* applied before saving: a module saved
after it fails to load again with ``torch.jit.load``; :func:`load_torchscript` applies
it after loading instead.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from liverseg.core.contract import TORCHSCRIPT_EXTRA_FILE, read_torchscript_contract
from liverseg.core.errors import ExportError, first_line
from liverseg.core.files import atomic_path
from liverseg.export.common import prepare_export
from liverseg.models.checkpoint import Checkpoint


def export_torchscript(
    ckpt: Checkpoint,
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    raw: bool = False,
    checkpoint_sha256: str | None = None,
    example_shape: tuple[int, int, int, int] = (1, 1, 256, 256),
) -> Path:
    """Trace, freeze and save ``ckpt``'s pipeline to ``path`` (atomically); return ``path``."""
    path = Path(path)
    prep = prepare_export(
        ckpt,
        backend="torchscript",
        exporter="torch.jit.trace + torch.jit.freeze",
        threshold=threshold,
        raw=raw,
        checkpoint_sha256=checkpoint_sha256,
        example_shape=example_shape,
    )
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit deprecation notices; parity is measured by verify()
                traced = torch.jit.trace(prep.pipeline, (prep.example,), check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
            frozen.save(str(tmp), _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(prep.contract, sort_keys=True)})
        except Exception as e:
            raise ExportError(f"TorchScript export of {ckpt.model_name} failed: {first_line(e)}") from None
        try:  # the saved file must load and carry its contract before it takes the final name
            read_torchscript_contract(tmp)
        except Exception as e:
            raise ExportError(f"the saved TorchScript file does not reload: {first_line(e)}") from None
    return path


def load_torchscript(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", optimize: bool = True
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """(module, contract); ``optimize`` applies ``torch.jit.optimize_for_inference`` after loading."""
    contract = read_torchscript_contract(Path(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location=device).eval()
        if optimize:
            module = torch.jit.optimize_for_inference(module)
    return module, contract
