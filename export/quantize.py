"""Reduced-precision ONNX models derived from the fp32 export: int8 (static QDQ) and fp16.

Both keep the contract's I/O types (uint8 or float32 raw pixels in, float32
probability and uint8 mask out) and keep the pre- and post-processing in float32;
only the network's arithmetic changes precision.

* :func:`quantize_int8` runs onnxruntime's static quantization in QDQ format,
  calibrated (MinMax) on real slices fed through the model's own uint8 input. Only
  the network's Conv / ConvTranspose / MaxPool / Concat / Relu nodes are quantized
  (``op_types_to_quantize``): the preprocessing (Cast, Div, Pad) and the sigmoid and
  threshold stay float. Activations uint8, weights int8 per channel (U8S8, the fast
  path of x86 VNNI kernels).
* :func:`convert_fp16` rewrites the network's nodes to float16 (weights stored as
  float16, one Cast in and one Cast out around every float16 region). It is meant
  for the CUDA execution provider; onnxruntime's CPU provider has no float16
  convolution kernel on x86.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.contract import CONTRACT_KEY, INPUT_NAME, validate_contract
from liverseg.core.errors import ExportError, first_line
from liverseg.core.files import atomic_path

INT8_OP_TYPES = ("Conv", "ConvTranspose", "MaxPool", "Concat", "Relu")
# Nodes that run in float16 in the fp16 model; everything else (preprocessing,
# Resize with its float32 scales, Slice, Sigmoid, Greater) stays float32.
FP16_OP_TYPES = ("Conv", "ConvTranspose", "Relu", "MaxPool", "Concat", "BatchNormalization")


def _load_contract(model: Any, source: str) -> dict[str, Any]:
    """The contract in an ``onnx.ModelProto``'s metadata, checked by ``validate_contract`` (ContractError)."""
    import json

    meta = {p.key: p.value for p in model.metadata_props}
    if CONTRACT_KEY not in meta:
        raise ExportError(f"{source}: has no liverseg contract; quantize a model written by export_onnx")
    try:
        contract = json.loads(meta[CONTRACT_KEY])
    except json.JSONDecodeError as e:
        raise ExportError(f"{source}: liverseg contract is not valid JSON ({e})") from None
    return validate_contract(contract, source)


def load_calibration_images(
    source: str | os.PathLike, limit: int | None = None, root: str | os.PathLike | None = None
) -> list[np.ndarray]:
    """uint8 [H, W] slices named by a folder or CSV (see :func:`liverseg.core.images.discover`)."""
    from liverseg.core.images import discover, read_image

    samples = discover(source, root=root)
    if limit is not None:
        samples = samples[:limit]
    return [read_image(s.image) for s in samples]


class _SliceReader:
    """onnxruntime CalibrationDataReader over uint8 slices, one per batch, in the model's input dtype."""

    def __init__(self, images: Sequence[np.ndarray], dtype: np.dtype) -> None:
        self._images = list(images)
        self._dtype = dtype
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._images):
            return None
        img = np.asarray(self._images[self._i])
        self._i += 1
        return {INPUT_NAME: img[None, None].astype(self._dtype)}

    def rewind(self) -> None:
        self._i = 0


def _last_conv(model: Any) -> list[str]:
    """Name of the last Conv node (the logits layer), which stays float32 in the int8 model."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    last = convs[-1]
    if not last.name:
        last.name = "liverseg_last_conv"
    return [last.name]


_CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def _check_calibration(images: Sequence[np.ndarray], method: str) -> None:
    if method not in _CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; valid: {', '.join(_CALIBRATION_METHODS)}")
    if not images:
        raise ExportError("int8 calibration needs at least one image")
    for i, img in enumerate(images):
        if np.asarray(img).ndim != 2:
            raise ExportError(f"calibration image {i} has shape {np.asarray(img).shape}; expected [H, W]")


def _quantize_static(
    fp32_onnx: Path,
    out: Path,
    reader: _SliceReader,
    *,
    per_channel: bool,
    op_types: list[str],
    keep_last_conv_float: bool,
    method: str,
) -> list[str]:
    """onnxruntime's static QDQ quantization of ``fp32_onnx`` into ``out``; the nodes kept float."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    with tempfile.TemporaryDirectory(prefix="liverseg-int8-") as work:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        exclude: list[str] = []
        if keep_last_conv_float:
            pre_model = onnx.load(str(pre))
            exclude = _last_conv(pre_model)
            onnx.save(pre_model, str(pre))
        quantize_static(
            str(pre),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=methods[method],
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return exclude


def quantize_int8(
    fp32_onnx: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_images: Sequence[np.ndarray],
    *,
    per_channel: bool = True,
    op_types: Iterable[str] = INT8_OP_TYPES,
    keep_last_conv_float: bool = True,
    method: str = "minmax",
) -> Path:
    """Static QDQ int8 model of ``fp32_onnx`` calibrated on ``calibration_images`` (uint8 [H, W]).

    ``keep_last_conv_float``: the logits layer (a 1x1 conv, a negligible share of the
    FLOPs) stays float32, so the logits near the threshold are not rounded to the
    uint8 grid of their whole range.
    """
    import onnx

    from liverseg.export.onnx import check_and_load, write_contract

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    _check_calibration(calibration_images, method)
    ops = list(op_types)
    contract = _load_contract(onnx.load(str(fp32_onnx)), str(fp32_onnx))
    dtype = np.dtype(np.float32 if contract["inputs"][0]["dtype"] == "float32" else np.uint8)
    with atomic_path(out_path) as tmp:
        try:
            exclude = _quantize_static(
                fp32_onnx,
                tmp,
                _SliceReader(calibration_images, dtype),
                per_channel=per_channel,
                op_types=ops,
                keep_last_conv_float=keep_last_conv_float,
                method=method,
            )
        except Exception as e:
            raise ExportError(f"int8 quantization failed: {first_line(e)}") from None
        quantization = {
            "format": "QDQ static",
            "activations": "uint8 asymmetric",
            "weights": "int8 symmetric",
            "per_channel": per_channel,
            "calibration": method,
            "calibration_images": len(calibration_images),
            "op_types": ops,
            "float_nodes": exclude,
        }
        contract = dict(contract, precision="int8", quantization=quantization)
        q = onnx.load(str(tmp))
        write_contract(q, contract)
        onnx.save(q, str(tmp))
        check_and_load(tmp, contract)
    return out_path


def _retype_inputs(g: Any, f16_nodes: list[Any], consumers: dict[str, list[Any]]) -> list[Any]:
    """Feed the float16 nodes float16 inputs; returns the Cast nodes this needs.

    A float32 initializer read only by float16 nodes is converted in place; one that
    float32 nodes read too gets a float16 copy; any other float32 tensor gets a Cast.
    """
    from onnx import TensorProto, helper, numpy_helper

    f16_ids = {id(n) for n in f16_nodes}
    produced_f16 = {o for n in f16_nodes for o in n.output}
    inits = {t.name: t for t in g.initializer}
    new_inits: list[Any] = []
    made: set[str] = set()
    cast_nodes: list[Any] = []

    def to_f16(name: str) -> str:
        if name in produced_f16 or not name:
            return name
        init = inits.get(name)
        if init is not None and init.data_type == TensorProto.FLOAT:
            if all(id(u) in f16_ids for u in consumers.get(name, [])):  # only float16 users: convert in place
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name))
                return name
            key = name + "__fp16"
            if key not in made:
                new_inits.append(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), key))
                made.add(key)
            return key
        if init is not None:  # int64 shapes etc.
            return name
        key = name + "__to_fp16"
        if key not in made:
            cast_nodes.append(helper.make_node("Cast", [name], [key], name=key, to=TensorProto.FLOAT16))
            made.add(key)
        return key

    for n in f16_nodes:
        for k, name in enumerate(n.input):
            n.input[k] = to_f16(name)
    g.initializer.extend(new_inits)
    return cast_nodes


def _cast_outputs_back(g: Any, f16_nodes: list[Any], consumers: dict[str, list[Any]]) -> list[Any]:
    """A Cast back to float32 for each float16 output read by a float32 node or by the graph's outputs."""
    from onnx import TensorProto, helper

    f16_ids = {id(n) for n in f16_nodes}
    graph_outputs = {o.name for o in g.output}
    cast_nodes: list[Any] = []
    for n in f16_nodes:
        for k, out in enumerate(n.output):
            f32_users = [u for u in consumers.get(out, []) if id(u) not in f16_ids]
            if not f32_users and out not in graph_outputs:
                continue
            back = out + "__to_fp32"
            if out in graph_outputs:  # keep the graph output's name and type
                n.output[k] = out + "__fp16"
                cast_nodes.append(helper.make_node("Cast", [n.output[k]], [out], name=back, to=TensorProto.FLOAT))
                for u in consumers.get(out, []):
                    for j, name in enumerate(u.input):
                        if name == out and id(u) in f16_ids:
                            u.input[j] = n.output[k]
                continue
            cast_nodes.append(helper.make_node("Cast", [out], [back], name=back, to=TensorProto.FLOAT))
            for u in f32_users:
                for j, name in enumerate(u.input):
                    if name == out:
                        u.input[j] = back
    return cast_nodes


def _topological_order(g: Any, nodes: list[Any]) -> list[Any]:
    """``nodes`` ordered so every input is produced before it is read (each Cast right after its producer)."""
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    ordered: list[Any] = []
    pending = nodes
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("fp16 conversion produced a graph with a cycle or a dangling input")
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    return ordered


def _float16_graph(model: Any, op_types: Iterable[str]) -> int:
    """Rewrite ``op_types`` nodes of the main graph to float16 in place; return how many."""
    import onnx

    g = model.graph
    wanted = set(op_types)
    f16_nodes = [n for n in g.node if n.op_type in wanted]
    if not f16_nodes:
        return 0
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    casts = _retype_inputs(g, f16_nodes, consumers)
    casts += _cast_outputs_back(g, f16_nodes, consumers)
    ordered = _topological_order(g, [*g.node, *casts])
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]  # types changed; shape inference recomputes them
    model.CopyFrom(onnx.shape_inference.infer_shapes(model))
    return len(f16_nodes)


def convert_fp16(
    fp32_onnx: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    op_types: Iterable[str] = FP16_OP_TYPES,
    check_providers: list[str] | None = None,
) -> Path:
    """float16 model of ``fp32_onnx`` for CUDA; I/O types unchanged (casts inside).

    The file is checked with ``onnx.checker`` (full). It is loaded in onnxruntime
    only with ``check_providers`` (e.g. ``["CUDAExecutionProvider"]``); the CPU
    provider cannot run float16 convolutions on x86.
    """
    import onnx

    from liverseg.export.onnx import check_and_load, write_contract

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    model = onnx.load(str(fp32_onnx))
    contract = _load_contract(model, str(fp32_onnx))
    try:
        n = _float16_graph(model, op_types)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"fp16 conversion failed: {first_line(e)}") from None
    if n == 0:
        raise ExportError(f"{fp32_onnx}: no {sorted(op_types)} nodes to convert to float16")
    contract = dict(
        contract, precision="fp16", fp16={"op_types": list(op_types), "nodes": n, "io": "unchanged (casts inside)"}
    )
    write_contract(model, contract)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"onnx.checker rejected the fp16 model: {first_line(e)}") from None
        if check_providers:
            check_and_load(tmp, contract, providers=check_providers)
    return out_path
