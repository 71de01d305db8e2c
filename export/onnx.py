"""ONNX export of the whole pipeline: raw pixels in, probability and mask out.

The exported graph is :class:`liverseg.models.SegmentationPipeline`:

* input ``image``: uint8 [N, 1, H, W] gray values as stored in PNG slices, or
  float32 raw intensities (CT HU) when exported with ``raw=True``;
* inside the graph: cast to float32, (window), normalise, optional resize, then
  zero padding on the bottom and right edges up to the next multiple of the
  network's ``pad_multiple`` (computed from the runtime shape: Shape -> Mod -> Pad),
  the network, cropping back to H x W, sigmoid, threshold;
* outputs ``probability`` float32 [N, 1, H, W] and ``mask`` uint8 [N, 1, H, W]
  (1 where probability > threshold).

N, H and W are dynamic; any H x W works, also sizes that are not multiples of 16.
The contract (:func:`liverseg.core.contract.build_contract`) is stored as JSON in
``metadata_props["liverseg.contract"]`` plus flat ``liverseg.*`` keys.

Exporter: the default is PyTorch's TorchScript-based exporter (``dynamo=False``,
``dynamic_axes``): it handles the shape arithmetic of the padding, exports a
width-4 U-Net in about 2 s where ``dynamo=True`` takes about 20 s, and the two files
run at the same speed in onnxruntime at opset 18 (measured on the CPU). ``exporter="dynamo"``
selects the ``torch.export`` based exporter with ``dynamic_shapes`` instead; both are tested.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverseg.core.contract import CONTRACT_KEY, INPUT_NAME, MASK_NAME, PROB_NAME, flat_metadata
from liverseg.core.engine import CPU_PROVIDER, CUDA_PROVIDER, EngineOptions, open_engine
from liverseg.core.errors import ContractError, DeviceError, ExportError, first_line
from liverseg.core.files import atomic_path
from liverseg.export.common import example_input, prepare_export
from liverseg.models.checkpoint import Checkpoint

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "check_and_load",
    "check_opset",
    "example_input",
    "export_onnx",
    "name_dynamic_dims",
    "supported_opsets",
    "write_contract",
]

DEFAULT_OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
# Opsets each exporter can write for this graph (dynamic Pad and Resize need >= 13 here;
# the TorchScript-based exporter stops at 20, the dynamo exporter's version converter at 23).
MIN_OPSET = 13


def supported_opsets(exporter: str = "torchscript") -> range:
    """The opsets the installed torch exporter can produce for the pipeline."""
    from torch.onnx import _constants

    if exporter == "torchscript":
        hi = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
        return range(MIN_OPSET, hi + 1)
    if exporter == "dynamo":
        hi = int(getattr(_constants, "ONNX_MAX_OPSET", 23))
        return range(18, hi + 1)
    raise ExportError(f"unknown exporter {exporter!r}; valid: {', '.join(EXPORTERS)}")


def check_opset(opset: int, exporter: str = "torchscript") -> int:
    ok = supported_opsets(exporter)
    if int(opset) not in ok:
        raise ExportError(
            f"opset {opset} cannot be produced by the installed torch {torch.__version__} "
            f"{exporter} exporter for this model; supported: {ok.start}..{ok.stop - 1}"
        )
    return int(opset)


def write_contract(model: Any, contract: dict[str, Any]) -> None:
    """Replace the liverseg entries of an ``onnx.ModelProto``'s metadata_props with ``contract``."""
    entries = {CONTRACT_KEY: json.dumps(contract, sort_keys=True), **flat_metadata(contract)}
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for k, v in [*keep, *entries.items()]:
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.doc_string = (
        f"liverseg {contract['model']['name']} {contract['precision']}: {INPUT_NAME} "
        f"{contract['inputs'][0]['dtype']} [N,1,H,W] -> {PROB_NAME} float32, {MASK_NAME} uint8 "
        f"(probability > {contract['threshold']}); preprocessing and padding inside the graph; "
        f"contract JSON in metadata key {CONTRACT_KEY!r}"
    )


def update_contract(path: str | Path, **changes: Any) -> dict[str, Any]:
    """Set top-level keys (``variants``, ``gates``) in the contract of the ONNX file ``path``, atomically."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    contract = {**json.loads(meta[CONTRACT_KEY]), **changes}
    write_contract(model, contract)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return contract


def name_dynamic_dims(model: Any) -> None:
    """Name the graph's input/output dims N, 1, H, W (the dynamo exporter writes formulas)."""
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        for d, name in zip(dims, ("N", None, "H", "W")):
            if name is not None:
                d.ClearField("dim_value")
                d.dim_param = name


def check_and_load(
    path: str | os.PathLike, contract: dict[str, Any] | None = None, providers: list[str] | None = None
) -> None:
    """``onnx.checker`` full check, then an onnxruntime session; names/dtypes must match the contract.

    ``providers``: the execution provider that must run the file first
    (``["CUDAExecutionProvider"]`` or the default, the CPU); a session that falls back
    to another one is an error.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the exported model: {first_line(e)}") from None
    wanted = (providers or [CPU_PROVIDER])[0]
    if wanted not in (CPU_PROVIDER, CUDA_PROVIDER):
        raise ExportError(f"cannot check the exported model on {wanted}; use {CPU_PROVIDER} or {CUDA_PROVIDER}")
    try:
        engine = open_engine(path, EngineOptions(device="cuda" if wanted == CUDA_PROVIDER else "cpu"))
    except ContractError as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {first_line(e)}") from None
    except DeviceError as e:  # onnxruntime-gpu falls back to the CPU silently; the engine refuses that
        raise ExportError(f"onnxruntime did not load the model on {wanted}: {first_line(e)}") from None
    if contract is not None:
        want_in = [(i["name"], i["dtype"]) for i in contract["inputs"]]
        want_out = [(o["name"], o["dtype"]) for o in contract["outputs"]]
        got_in = [(i.name, i.dtype) for i in engine.inputs()]
        got_out = [(o.name, o.dtype) for o in engine.outputs()]
        if got_in != want_in or got_out != want_out:
            raise ExportError(
                f"exported model has inputs {got_in} / outputs {got_out}; contract says {want_in} / {want_out}"
            )


def _torch_onnx_export(pipe: nn.Module, x: torch.Tensor, out: Path, exporter: str, opset: int) -> None:
    """Write ``pipe`` traced on ``x`` to ``out`` with dynamic N, H and W, by the named torch.onnx exporter."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices and tracer hints; parity is measured by verify()
        if exporter == "torchscript":
            axes = {0: "N", 2: "H", 3: "W"}
            torch.onnx.export(
                pipe,
                (x,),
                str(out),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[PROB_NAME, MASK_NAME],
                dynamic_axes={INPUT_NAME: axes, PROB_NAME: axes, MASK_NAME: axes},
                do_constant_folding=True,
            )
            return
        from torch.export import Dim

        dims = {0: Dim("N", min=1, max=4096), 2: Dim("H", min=2, max=16384), 3: Dim("W", min=2, max=16384)}
        prog = torch.onnx.export(
            pipe,
            (x,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[PROB_NAME, MASK_NAME],
            dynamic_shapes=(dims,),
            optimize=True,
            verbose=False,
            report=False,
        )
        if prog is None:
            raise ExportError("the dynamo exporter returned no ONNX program")
        prog.save(str(out), external_data=False)


def export_onnx(
    ckpt: Checkpoint,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    threshold: float | None = None,
    raw: bool = False,
    checkpoint_sha256: str | None = None,
    exporter: str = "torchscript",
    example_shape: tuple[int, int, int, int] = (1, 1, 256, 256),
) -> Path:
    """Export ``ckpt``'s whole pipeline to ``path`` (atomically); return ``path``.

    The file is written under a temporary name, given its contract, checked with
    ``onnx.checker.check_model(full_check=True)`` and loaded in onnxruntime; only
    then is it renamed to ``path``. Raises :class:`ExportError` (one line).
    """
    import onnx

    path = Path(path)
    check_opset(opset, exporter)
    prep = prepare_export(
        ckpt,
        backend="onnx",
        exporter=f"torch.onnx {exporter}",
        threshold=threshold,
        raw=raw,
        checkpoint_sha256=checkpoint_sha256,
        opset=opset,
        example_shape=example_shape,
    )
    with atomic_path(path) as tmp:
        try:
            _torch_onnx_export(prep.pipeline, prep.example, tmp, exporter, opset)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(
                f"torch.onnx ({exporter}) could not export {ckpt.model_name} at opset {opset}: {first_line(e)}"
            ) from None
        try:
            model = onnx.load(str(tmp))
        except Exception as e:
            raise ExportError(f"the exporter wrote an unreadable ONNX file: {first_line(e)}") from None
        name_dynamic_dims(model)
        write_contract(model, prep.contract)
        onnx.save(model, str(tmp))
        check_and_load(tmp, prep.contract)
    return path
