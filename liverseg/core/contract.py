"""The contract an exported model carries: what goes in, what comes out, how it was made.

Exported ONNX files store it in ``metadata_props`` under the key ``liverseg.contract``
(a JSON string), plus a few flat keys for tools that show metadata (Netron, ORT).
TorchScript files store the same JSON as the extra file ``liverseg_contract.json``.
A client reads it with onnxruntime alone::

    meta = ort.InferenceSession(path).get_modelmeta().custom_metadata_map
    contract = json.loads(meta["liverseg.contract"])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from liverseg.core.engine import open_engine
from liverseg.core.errors import ContractError, first_line
from liverseg.core.files import versions

if TYPE_CHECKING:  # preprocess imports torch; the contract reader must not
    from liverseg.core.preprocess import Preprocessing

CONTRACT_KEY = "liverseg.contract"
TORCHSCRIPT_EXTRA_FILE = "liverseg_contract.json"
CONTRACT_FORMAT = "liverseg-model"
CONTRACT_VERSION = 1

INPUT_NAME = "image"
# How CT numbers become the model's gray input, when a model records nothing else:
# the PNG sets of this project and the study store HU clipped to [0, 255].
DEFAULT_WINDOW_HU = (0.0, 255.0)
MODEL_VIEW = "axial slices, radiological view (anterior at the top, the patient's right on the viewer's left)"
PROB_NAME = "probability"
MASK_NAME = "mask"


class ContractSource(Protocol):
    """What a contract is built from: :class:`liverseg.checkpoint.Checkpoint` has all of it."""

    model_name: str
    model_args: dict[str, Any]
    preprocessing: Preprocessing
    threshold: float
    config: dict[str, Any]
    epoch: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    data_summary: dict[str, Any]
    versions: dict[str, str]


def build_contract(
    ckpt: ContractSource,
    *,
    threshold: float | None = None,
    raw: bool = False,
    precision: str = "fp32",
    checkpoint_sha256: str | None = None,
    opset: int | None = None,
    backend: str = "onnx",
    pixel_spacing_mm: float | None = None,
    window_hu: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The contract dict for a :class:`liverseg.checkpoint.Checkpoint` being exported.

    ``pixel_spacing_mm`` and ``window_hu`` default to the training config's keys of
    those names (see :func:`ct_settings` for what they mean).
    """
    thr = float(ckpt.threshold if threshold is None else threshold)
    cfg = without_paths(ckpt.config or {})
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else cfg.get("pixel_spacing_mm")
    window = window_hu if window_hu is not None else cfg.get("window_hu") or DEFAULT_WINDOW_HU
    return {
        "format": CONTRACT_FORMAT,
        "version": CONTRACT_VERSION,
        "backend": backend,
        "precision": precision,
        "opset": opset,
        "model": {"name": ckpt.model_name, "args": dict(ckpt.model_args)},
        "preprocessing": ckpt.preprocessing.to_dict(),
        "threshold": thr,
        "ct": {
            "window_hu": [float(window[0]), float(window[1])],
            "pixel_spacing_mm": None if spacing is None else float(spacing),
            "view": MODEL_VIEW,
        },
        "input_kind": "hu" if raw else "uint8",
        "inputs": [{"name": INPUT_NAME, "dtype": "float32" if raw else "uint8", "shape": ["N", 1, "H", "W"]}],
        "outputs": [
            {"name": PROB_NAME, "dtype": "float32", "shape": ["N", 1, "H", "W"]},
            {"name": MASK_NAME, "dtype": "uint8", "shape": ["N", 1, "H", "W"], "rule": f"probability > {thr}"},
        ],
        "provenance": {
            **(cfg.get("provenance") or {}),
            "pixel_spacing_mm": None if spacing is None else float(spacing),
            "window_hu": [float(window[0]), float(window[1])],
            "liverseg_version": versions().get("liverseg"),
        },
        "training": {
            "config": cfg,
            "epoch": ckpt.epoch,
            "best": ckpt.best,
            "data_summary": without_paths(ckpt.data_summary or {}),
            "last_metrics": ckpt.history[-1] if ckpt.history else None,
        },
        "checkpoint_sha256": checkpoint_sha256,
        "versions": {**versions(), "checkpoint": ckpt.versions},
    }


# Config and data-summary keys whose values are paths of the machine that trained the model.
PATH_KEYS = frozenset(
    {"tdata_x_path", "tdata_y_path", "vdata_x_path", "vdata_y_path", "output_dir", "data_root", "resume", "source"}
)


def without_paths(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (nested) with every path value cut to its file name: a model file names no folder of the machine
    that built it (a string ``save_model`` is a path too)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out[key] = without_paths(value)
        elif isinstance(value, str) and (key in PATH_KEYS or key == "save_model"):
            out[key] = Path(value).name
        else:
            out[key] = value
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (checkpoints and model files are identified by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def contract_from_metadata(meta: dict[str, str], source: str) -> dict[str, Any]:
    """The contract stored in an ONNX file's metadata map; a clear error when absent or bad."""
    if CONTRACT_KEY not in meta:
        raise ContractError(
            f"{source}: has no liverseg contract (metadata key {CONTRACT_KEY!r}); export it with "
            "liverseg-export, or pass the contract explicitly with --contract FILE.json"
        )
    try:
        contract = json.loads(meta[CONTRACT_KEY])
    except json.JSONDecodeError as e:
        raise ContractError(f"{source}: liverseg contract is not valid JSON ({e})") from None
    except RecursionError:
        raise ContractError(f"{source}: liverseg contract JSON is nested too deeply to be a contract") from None
    return validate_contract(contract, source)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _io_list(contract: dict[str, Any], key: str, source: str) -> None:
    value = contract[key]
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("dtype"), str) for v in value
        )
    )
    if not ok:
        raise ContractError(
            f"{source}: liverseg contract {key!r} must be a list of {{name, dtype, shape}} entries, got {value!r:.80}"
        )


def validate_contract(contract: Any, source: str = "model") -> dict[str, Any]:
    """The contract, every field the runner uses type- and range-checked; else ContractError naming the key.

    Called before any input is read, so a bad contract stops a run at once (exit 2)
    instead of failing at the summary after every input was processed.
    """
    if not isinstance(contract, dict) or contract.get("format") != CONTRACT_FORMAT:
        raise ContractError(f"{source}: not a liverseg model contract")
    for key in ("preprocessing", "threshold", "inputs", "outputs", "input_kind"):
        if key not in contract:
            raise ContractError(f"{source}: liverseg contract lacks {key!r}")
    thr = contract["threshold"]
    if not _number(thr) or not 0 < thr < 1:
        raise ContractError(f"{source}: liverseg contract 'threshold' must be a number in (0, 1), got {thr!r:.40}")
    if contract["input_kind"] not in ("uint8", "hu"):
        raise ContractError(
            f"{source}: liverseg contract 'input_kind' must be 'uint8' or 'hu', got {contract['input_kind']!r:.40}"
        )
    if not isinstance(contract["preprocessing"], dict):
        raise ContractError(f"{source}: liverseg contract 'preprocessing' must be an object")
    _io_list(contract, "inputs", source)
    _io_list(contract, "outputs", source)
    names = {o["name"] for o in contract["outputs"]}
    if not names & {PROB_NAME, MASK_NAME}:
        raise ContractError(f"{source}: liverseg contract 'outputs' names neither {PROB_NAME!r} nor {MASK_NAME!r}")
    ct = contract.get("ct")
    if ct is not None:
        if not isinstance(ct, dict):
            raise ContractError(f"{source}: liverseg contract 'ct' must be an object")
        window = ct.get("window_hu")
        if window is not None and not (isinstance(window, list) and len(window) == 2 and all(map(_number, window))):
            raise ContractError(f"{source}: liverseg contract 'ct.window_hu' must be [low, high], got {window!r:.40}")
        spacing = ct.get("pixel_spacing_mm")
        if spacing is not None and not _number(spacing):
            raise ContractError(
                f"{source}: liverseg contract 'ct.pixel_spacing_mm' must be a number, got {spacing!r:.40}"
            )
        try:
            ct_settings(contract)
        except ContractError as e:
            raise ContractError(f"{source}: {e}") from None
    return contract


def ct_settings(contract: dict[str, Any]) -> tuple[tuple[float, float], float | None]:
    """(HU window, in-plane pixel spacing in mm or None) of a model's contract.

    The window maps CT numbers to the model's gray input: HU ``lo`` -> 0, ``hi`` -> 255,
    clipped. The spacing is the pixel size the model was trained at; None when the
    contract does not record it (a model exported before it was recorded, or trained on
    slices of unknown spacing), and then inputs are used at their own spacing.
    """
    ct = contract.get("ct") or {}
    window = ct.get("window_hu") or DEFAULT_WINDOW_HU
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ContractError(f"contract ct.window_hu must be [low, high] with high > low, got {window}")
    spacing = ct.get("pixel_spacing_mm")
    if spacing is not None and not 0 < float(spacing) <= 10:
        raise ContractError(f"contract ct.pixel_spacing_mm must be in (0, 10] mm, got {spacing}")
    return (lo, hi), (None if spacing is None else float(spacing))


def read_onnx_contract(path: str | Path) -> dict[str, Any]:
    """The contract of an ONNX file, read with onnxruntime only (no onnx, no torch)."""
    engine = open_engine(path)  # ContractError naming the file when it is missing or will not load
    return contract_from_metadata(engine.metadata(), str(path))


def flat_metadata(contract: dict[str, Any]) -> dict[str, str]:
    """A few flat ``key -> string`` entries beside the full JSON, for tools that list metadata."""
    model = contract.get("model", {})
    inp = contract.get("inputs", [{}])[0]
    training = contract.get("training") or {}
    best = training.get("best") or {}
    vers = contract.get("versions") or {}
    return {
        "liverseg.model": f"{model.get('name')} {json.dumps(model.get('args', {}), sort_keys=True)}",
        "liverseg.precision": str(contract.get("precision")),
        "liverseg.threshold": repr(float(contract["threshold"])),
        "liverseg.input": f"{inp.get('name')} {inp.get('dtype')} [N,1,H,W] ({contract.get('input_kind')})",
        "liverseg.outputs": ", ".join(f"{o['name']} {o['dtype']} [N,1,H,W]" for o in contract.get("outputs", [])),
        "liverseg.preprocessing": json.dumps(contract.get("preprocessing"), sort_keys=True),
        "liverseg.best": json.dumps(best, sort_keys=True) if best else "",
        "liverseg.checkpoint_sha256": str(contract.get("checkpoint_sha256") or ""),
        "liverseg.version": str(vers.get("liverseg", "")),
        "torch.version": str(vers.get("torch", "")),
    }


def read_torchscript_contract(path: str | Path) -> dict[str, Any]:
    """The contract stored in a TorchScript file's extra file ``liverseg_contract.json``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: model file not found")
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise ContractError(f"{path}: torch.jit cannot load it ({first_line(e, 200)})") from None
    raw = extra[TORCHSCRIPT_EXTRA_FILE]
    if not raw:
        raise ContractError(f"{path}: has no liverseg contract (extra file {TORCHSCRIPT_EXTRA_FILE!r})")
    try:
        contract = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ContractError(f"{path}: liverseg contract is not valid JSON ({e})") from None
    return validate_contract(contract, str(path))
