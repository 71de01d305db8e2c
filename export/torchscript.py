"""TorchScript export of the whole pipeline (same inputs, outputs and contract as ONNX).

The pipeline is traced (its padding uses the runtime shape, which the tracer records
as shape arithmetic, so N, H and W stay dynamic) and frozen, and the frozen module is
saved with the contract as the extra file ``liverseg_contract.json``.
``torch.jit.optimize_for_inference`` is *not* applied before saving: a module saved
after it fails to reload (PERFORMANCE.md); :func:`load_torchscript` applies it after
loading instead.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from liverseg.core.contract import TORCHSCRIPT_EXTRA_FILE, build_contract, read_torchscript_contract
from liverseg.core.errors import ExportError, first_line
from liverseg.core.io import atomic_path
from liverseg.export.onnx import example_input


def export_torchscript(
    ckpt: Any,
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    raw: bool = False,
    checkpoint_sha256: str | None = None,
    example_shape: tuple[int, int, int, int] = (1, 1, 256, 256),
) -> Path:
    """Trace, freeze and save ``ckpt``'s pipeline to ``path`` (atomically); return ``path``."""
    from liverseg.models.checkpoint import file_sha256

    path = Path(path)
    if checkpoint_sha256 is None and getattr(ckpt, "path", None) is not None and Path(ckpt.path).is_file():
        checkpoint_sha256 = file_sha256(ckpt.path)
    pipe = ckpt.build_pipeline(threshold=threshold, raw=raw)
    contract = build_contract(
        ckpt, threshold=threshold, raw=raw, precision="fp32", checkpoint_sha256=checkpoint_sha256, backend="torchscript"
    )
    contract["exporter"] = "torch.jit.trace + torch.jit.freeze"
    contract["padding"] = (
        f"inside the module: zero padding on the bottom and right edges to the next multiple of "
        f"{ckpt.preprocessing.pad_multiple}; outputs are cropped back to H x W"
    )
    x = example_input(example_shape, raw)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit deprecation notices; parity is measured by verify()
                traced = torch.jit.trace(pipe, (x,), check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
            frozen.save(str(tmp), _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(contract, sort_keys=True)})
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
    contract = read_torchscript_contract(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location=device).eval()
        if optimize:
            module = torch.jit.optimize_for_inference(module)
    return module, contract
