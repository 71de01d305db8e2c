"""Where a model is opened, for ``liverseg-infer`` and the Python API alike: :func:`open_model`.

One path: the model resolved (:func:`liverseg.reference.resolve_model`; a checkpoint exported
once), its contract read from the file's metadata, the engine and precision chosen
(:func:`liverseg.core.choose.choose`: the first gated combination in this CPU class's order),
the engine opened (:func:`liverseg.core.engine.open_engine`, which holds the thread and
spinning settings and the device rule: ``cuda`` must load or it is a
:class:`~liverseg.core.errors.DeviceError`; ``auto`` says what it chose), and its inputs and
outputs checked against the contract. The :class:`ModelSession` that comes back is not changed
afterwards: each :meth:`ModelSession.run` call says whether it wants the probability.

CUDA settings: inputs are bound from host memory (uint8, the smallest form of the
data; the pipeline converts on the GPU) with I/O binding; the mask output is bound to
host memory (ORT copies it once); the probability output is not bound, so it stays an
intermediate on the GPU and is never copied, unless the run call asks for it.
cuDNN's convolution algorithm search is ``EXHAUSTIVE`` when the inputs come in few
sizes (it benchmarks every algorithm once per input shape and caches the fastest, a
cost repaid after a handful of batches of the same shape) and ``HEURISTIC`` when they
vary a lot (each new shape would pay the full search).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.choose import choose, describe, onnx_metadata
from liverseg.core.contract import (
    INPUT_NAME,
    MASK_NAME,
    PROB_NAME,
    contract_from_metadata,
    file_sha256,
    validate_contract,
)
from liverseg.core.engine import (
    CUDA_PROVIDER,
    DEVICES,
    TENSORRT_PROVIDER,
    Engine,
    EngineOptions,
    OrtEngine,
    cache_root,
    open_engine,
)
from liverseg.core.errors import ContractError, DeviceError, UsageError
from liverseg.core.extras import missing_extra
from liverseg.reference import resolve_model

__all__ = [
    "DEVICES",
    "DeviceError",
    "ModelSession",
    "cudnn_search_for",
    "exported_checkpoint",
    "is_checkpoint",
    "open_model",
    "open_session",
    "read_contract",
]

ORT_ENGINES = ("onnxruntime", "tensorrt")  # engines whose session is an onnxruntime.InferenceSession

EXHAUSTIVE_MAX_SHAPES = 4  # more distinct input sizes than this -> HEURISTIC search


def read_contract(meta: dict[str, str], source: str, explicit: Path | None = None) -> dict[str, Any]:
    """The model's contract from its metadata, or from ``explicit`` (a JSON file) when given."""
    if explicit is not None:
        try:
            contract = json.loads(Path(explicit).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ContractError(f"{explicit}: cannot read the contract JSON ({e})") from None
        except RecursionError:
            raise ContractError(f"{explicit}: the contract JSON is nested too deeply to be a contract") from None
        return validate_contract(contract, str(explicit))
    return contract_from_metadata(meta, source)


def cudnn_search_for(sizes: list[tuple[int, int]]) -> str:
    """EXHAUSTIVE for few distinct input sizes, HEURISTIC for many (reason in the module docstring)."""
    return "EXHAUSTIVE" if len(set(sizes)) <= EXHAUSTIVE_MAX_SHAPES else "HEURISTIC"


@dataclass
class ModelSession:
    """A loaded model (:class:`liverseg.core.engine.Engine`) plus what the runner needs to know about it.

    Opened by :func:`open_session`, then only run: each :meth:`run` call says which outputs it wants.
    """

    path: Path
    engine: Engine
    contract: dict[str, Any]
    sha256: str
    device: str  # "cpu" or "cuda:<id>"
    providers_requested: list[str]
    threads: int
    spinning: bool
    input_name: str
    output_names: list[str]  # the model file's outputs (``mask``, ``probability`` or both)
    notes: list[str] = field(default_factory=list)
    cudnn_conv_algo_search: str | None = None
    device_id: int = 0
    # --contract given: its threshold is applied to the probability, the model's own mask is not used
    own_threshold: bool = False
    _checked: bool = False  # the first batch's outputs were checked against the contract
    engine_name: str = "onnxruntime"
    precision: str = "fp32"
    choice: dict[str, Any] = field(default_factory=dict)  # liverseg.core.choose.Choice.to_dict()

    @property
    def session(self) -> Any:
        """The onnxruntime.InferenceSession of an ONNX Runtime engine (else the engine itself)."""
        return getattr(self.engine, "session", self.engine)

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def providers(self) -> list[str]:
        if self.engine_name in ORT_ENGINES:
            return list(self.session.get_providers())
        return [str(self.engine.provider)]

    @property
    def threshold(self) -> float:
        return float(self.contract["threshold"])

    def run(self, batch: np.ndarray, probability: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 [N, 1, H, W] -> (mask uint8 [N, 1, H, W] 0/1, probability float32, or None unless ``probability``).

        Every batch's outputs must have the batch's shape and the contract's dtypes and
        a mask of 0/1; the first batch's probabilities must lie in [0, 1]. A
        model that breaks this is a :class:`ContractError`: the run stops with one usage
        error instead of writing wrong masks or failing every input on its own.
        """
        has_mask = MASK_NAME in self.output_names and not self.own_threshold
        want = [MASK_NAME] if has_mask else []
        if probability or not has_mask:
            want.append(PROB_NAME)
        if self.device.startswith("cuda"):
            got = self._run_cuda(batch, want)
        else:
            got = self.engine.run({self.input_name: batch}, want)
        res = dict(zip(want, got))
        prob, mask = res.get(PROB_NAME), res.get(MASK_NAME)
        self._check(batch, mask, prob)
        if mask is None:
            mask = (np.asarray(prob) > self.threshold).astype(np.uint8)
        return mask, (prob if probability else None)

    def _check(self, batch: np.ndarray, mask: np.ndarray | None, prob: np.ndarray | None) -> None:
        want = tuple(batch.shape)
        for name, arr, dtype in ((MASK_NAME, mask, np.uint8), (PROB_NAME, prob, np.float32)):
            if arr is None:
                continue
            if tuple(arr.shape) != want or arr.dtype != dtype:
                raise ContractError(
                    f"{self.path}: output {name!r} is {arr.dtype} {list(arr.shape)} for an input of {list(want)}; "
                    f"the contract says {np.dtype(dtype).name} [N, 1, H, W] of the input's size"
                )
        if mask is not None and mask.size and int(mask.max()) > 1:  # every batch: a max over bytes is cheap
            raise ContractError(
                f"{self.path}: output {MASK_NAME!r} holds values up to {int(mask.max())}; the contract says 0/1"
            )
        if self._checked:
            return
        if prob is not None and prob.size and not (np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1):
            raise ContractError(f"{self.path}: output {PROB_NAME!r} is not a probability (values outside [0, 1])")
        self._checked = True

    def _run_cuda(self, batch: np.ndarray, want: list[str]) -> list[np.ndarray]:
        """The ``want`` outputs through I/O binding: the input from host memory, only those outputs copied back
        (an unbound probability stays an intermediate on the GPU)."""
        assert isinstance(self.engine, OrtEngine)  # CUDA runs only in ONNX Runtime's engines
        io = self.session.io_binding()
        io.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        for name in want:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io, self.engine.run_options)
        io.synchronize_outputs()
        return [v.numpy() for v in io.get_outputs()]

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "contract": self.contract,
        }


def open_session(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    threads: int | None = None,
    spinning: bool = False,
    contract_path: Path | None = None,
    sizes: list[tuple[int, int]] | None = None,
    device_id: int = 0,
    require_probability: bool = False,
    engine: str = "auto",
    precision: str = "auto",
) -> ModelSession:
    """Open the model in the chosen engine under its device rule; check its contract and its inputs and outputs.

    ``engine``/``precision`` (``auto`` or a name) are resolved by :func:`liverseg.core.choose.choose`
    from ``path`` (the fp32 export; its siblings lie beside it) and this machine.
    ``require_probability``: a model without a probability output is refused. Nothing is
    changed on the session once it is open: each :meth:`ModelSession.run` call says whether
    it wants the probability.
    """
    search = cudnn_search_for(sizes or [])
    try:  # the contract only guides the choice; a file without one fails below with the usual message
        own = read_contract(onnx_metadata(path), str(path), contract_path)
    except ContractError:
        own = {}
    chosen = choose(path, engine=engine, precision=precision, device=device, contract=own)
    options = EngineOptions(
        device=device,
        device_id=device_id,
        threads=threads,
        spinning=spinning,
        cuda_options={
            "cudnn_conv_algo_search": search,
            "cudnn_conv_use_max_workspace": "1",
            "do_copy_in_default_stream": "1",
        },
        precision=chosen.precision,
    )
    loaded = open_engine(chosen.path, options, engine=chosen.engine)
    path = chosen.path
    contract = read_contract(loaded.metadata(), str(path), contract_path)
    if contract.get("input_kind", "uint8") != "uint8":
        raise ContractError(
            f"{path}: the model expects {contract.get('input_kind')!r} input (raw intensities); this "
            "runner reads 8-bit/16-bit image files. Export the model without raw=True."
        )
    inputs = loaded.inputs()
    if len(inputs) != 1 or inputs[0].dtype != "uint8":
        raise ContractError(
            f"{path}: expected one uint8 input [N,1,H,W] named {INPUT_NAME!r}, got "
            f"{[(i.name, i.dtype, list(i.shape)) for i in inputs]}"
        )
    outs = {o.name for o in loaded.outputs()}
    if not outs & {MASK_NAME, PROB_NAME}:
        raise ContractError(f"{path}: has neither a {MASK_NAME!r} nor a {PROB_NAME!r} output (outputs {sorted(outs)})")
    if require_probability and PROB_NAME not in outs:
        raise ContractError(f"{path}: has no {PROB_NAME!r} output, so probability maps cannot be saved")
    if contract_path is not None and MASK_NAME in outs and PROB_NAME not in outs:
        raise ContractError(
            f"{contract_path}: its threshold {contract['threshold']:g} cannot be applied: {path} returns only a "
            f"thresholded {MASK_NAME!r} (no {PROB_NAME!r} output)"
        )
    on_cuda = loaded.provider == CUDA_PROVIDER
    requested = ["CPUExecutionProvider"] if device == "cpu" else [CUDA_PROVIDER, "CPUExecutionProvider"]
    if chosen.engine == "tensorrt":
        requested = [TENSORRT_PROVIDER, CUDA_PROVIDER, "CPUExecutionProvider"]
    elif chosen.engine != "onnxruntime":
        requested = [f"OpenVINO CPU {chosen.precision}"]
    return ModelSession(
        path=path,
        engine=loaded,
        contract=contract,
        sha256=file_sha256(path),
        device=loaded.device,
        providers_requested=requested,
        threads=options.n_threads,
        spinning=spinning,
        input_name=inputs[0].name,
        output_names=[o.name for o in loaded.outputs()],
        notes=[describe(chosen), *chosen.notes, *loaded.notes],
        cudnn_conv_algo_search=search if on_cuda else None,
        device_id=device_id,
        own_threshold=contract_path is not None,  # the given contract's threshold is the one applied
        engine_name=chosen.engine,
        precision=chosen.precision,
        choice=chosen.to_dict(),
    )


def open_model(
    model: str | os.PathLike[str] | None,
    runs_dirs: list[Path],
    log: Callable[[str], None],
    flag: str = "--model ",
    **options: Any,
) -> ModelSession:
    """The one way a model is opened, for ``liverseg-infer`` and the Python API: ``model`` resolved by
    :func:`liverseg.reference.resolve_model` (a file, ``latest`` or ``reference``; None: the shipped one), a
    checkpoint exported once, then :func:`open_session` with ``options``. Which model, and the session's
    notes (engine, device and why), are said in ``log``; ``flag`` is how the caller's user names the model.
    """
    found, how = resolve_model(None if model is None else str(model), runs_dirs)
    if found is None:
        raise UsageError(f"no model: {how}; pass {flag}FILE.onnx (export one with liverseg-export)")
    if how == "--model" and not found.is_file():
        raise UsageError(f"{flag}{found}: no such file (or 'latest' / 'reference')")
    log(f"model: {found} ({'given' if how == '--model' else how})")
    sess = open_session(exported_checkpoint(found, log) if is_checkpoint(found) else found, **options)
    for note in sess.notes:
        log(note)
    return sess


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def is_checkpoint(path: Path) -> bool:
    """True for a liverseg checkpoint file name (``--model best.pt``), which is exported before it runs."""
    return path.suffix.lower() in CHECKPOINT_SUFFIXES


def exported_checkpoint(path: Path, log: Callable[[str], None]) -> Path:
    """The ONNX export of the liverseg checkpoint ``path``, made once and kept in the cache.

    The cache folder is ``cache_root()/checkpoints/<sha256 of the checkpoint>/model.onnx``
    (``$LIVERSEG_CACHE_DIR``, else ``~/.cache/liverseg``): the same checkpoint is exported
    once, a changed one again. Exporting needs the ``train`` extra (torch, onnx); the
    export is said in the log, and so is a cached one.
    """
    sha = file_sha256(path)
    out = cache_root() / "checkpoints" / sha / "model.onnx"
    if out.is_file():
        log(f"model: {path} is a checkpoint; its ONNX export from the cache: {out} (sha256 {sha[:12]})")
        return out
    try:
        from liverseg.export.onnx import export_onnx
        from liverseg.models.checkpoint import load_checkpoint
    except ModuleNotFoundError as e:
        raise UsageError(
            missing_extra(e, f"--model {path} (a checkpoint, exported to ONNX before it runs)") or str(e)
        ) from None
    log(f"model: {path} is a checkpoint; exporting it to ONNX once, into the cache: {out} (sha256 {sha[:12]})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the model cache {out.parent} ({e.strerror}); set LIVERSEG_CACHE_DIR") from None
    return export_onnx(load_checkpoint(path), out, checkpoint_sha256=sha)
