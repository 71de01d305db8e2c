"""The ONNX Runtime session of the runner: model lookup, contract, device rules, CUDA I/O binding.

Device rules (the issue's, and STYLE.md rule 10):

* ``cpu``: the CPU execution provider.
* ``cuda``: the CUDA execution provider, or a :class:`DeviceError` naming why it did
  not load. onnxruntime-gpu on a machine without a usable CUDA lists
  ``CUDAExecutionProvider`` as available and then silently builds a CPU-only session;
  only ``session.get_providers()`` tells the truth, so that is what is checked.
* ``auto``: CUDA when it loads, else CPU; the choice and the reason are reported.

onnxruntime's own log lines (the CUDA load failure is printed twice, with ANSI colours)
are kept out of normal output: the default logger is set to errors-only and stderr is
captured at the file-descriptor level while the session is built; the captured text
becomes the reason in the error message instead.

CUDA settings: inputs are bound from host memory (uint8, the smallest form of the
data; the pipeline converts on the GPU) with I/O binding; the mask output is bound to
host memory (ORT copies it once); the probability output is not bound, so it stays an
intermediate on the GPU and is never copied, unless probability maps are saved. cuDNN's convolution algorithm search is ``EXHAUSTIVE``
when the inputs come in few sizes (it benchmarks every algorithm once per input shape
and caches the fastest, a cost repaid after a handful of batches of the same shape) and
``HEURISTIC`` when they vary a lot (each new shape would pay the full search).
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from liverseg.contract import (INPUT_NAME, MASK_NAME, PROB_NAME, ContractError, contract_from_metadata, file_sha256,
                               validate_contract)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
EXHAUSTIVE_MAX_SHAPES = 4  # more distinct input sizes than this -> HEURISTIC search
# A reference model shipped with the package takes the place of "newest export" once
# one exists (none ships yet; see the runner's model lookup).
REFERENCE_MODEL = Path(__file__).with_name("reference") / "model.onnx"


class DeviceError(RuntimeError):
    """The requested execution provider cannot be used; the message says why."""


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only; warnings such as node placement are noise here
    return ort


def find_model(runs_dirs: list[Path]) -> tuple[Path | None, str]:
    """(path, how it was chosen) of the model to use when ``--model`` is not given."""
    found = []
    for d in runs_dirs:
        if d.is_dir():
            found += [p for p in d.glob("*/export/model.onnx") if p.is_file()]
    if found:
        newest = max(found, key=lambda p: p.stat().st_mtime)
        return newest, f"newest export in {newest.parent.parent.parent}"
    if REFERENCE_MODEL.is_file():
        return REFERENCE_MODEL, "the reference model shipped with liverseg"
    return None, "no export found under " + ", ".join(str(d / "*/export/model.onnx") for d in runs_dirs)


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (onnxruntime's logger) into ``out[0]``."""
    out = [""]
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreter): nothing to capture
        yield out
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out[0] = tmp.read().decode("utf-8", "replace")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cuda_reason(log: str) -> str:
    """The useful line of onnxruntime's CUDA failure log."""
    text = _ANSI.sub("", log)
    m = re.search(r"Failed to load library (\S+) with error: ([^\n]+)", text)
    if m:
        return f"{Path(m.group(1)).name} failed to load: {m.group(2).strip()}"
    m = re.search(r"Failed to create CUDAExecutionProvider\.([^\n]*)", text)
    if m:
        return "Failed to create CUDAExecutionProvider." + m.group(1).split("Please install")[0].rstrip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "onnxruntime gave no reason"


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels when they are installed that way (ORT >= 1.21).

    Without this, onnxruntime-gpu finds only system-wide CUDA libraries. Its messages
    (printed on stdout) are swallowed; a failure shows up as the session's CUDA reason.
    """
    if not hasattr(ort, "preload_dlls"):
        return
    with _captured_stderr(), contextlib.redirect_stdout(_io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:  # missing wheels: the session creation reports why CUDA did not load
            pass


def read_contract(meta: dict[str, str], source: str, explicit: Path | None = None) -> dict[str, Any]:
    """The model's contract from its metadata, or from ``explicit`` (a JSON file) when given."""
    if explicit is not None:
        try:
            contract = json.loads(Path(explicit).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ContractError(f"{explicit}: cannot read the contract JSON ({e})") from None
        return validate_contract(contract, str(explicit))
    return contract_from_metadata(meta, source)


def cudnn_search_for(sizes: list[tuple[int, int]]) -> str:
    """EXHAUSTIVE for few distinct input sizes, HEURISTIC for many (reason in the module docstring)."""
    return "EXHAUSTIVE" if len(set(sizes)) <= EXHAUSTIVE_MAX_SHAPES else "HEURISTIC"


@dataclass
class ModelSession:
    """An onnxruntime session plus what the runner needs to know about it."""

    path: Path
    session: Any
    contract: dict[str, Any]
    sha256: str
    device: str  # "cpu" or "cuda:<id>"
    providers_requested: list[str]
    threads: int
    spinning: bool
    notes: list[str] = field(default_factory=list)
    cudnn_conv_algo_search: str | None = None
    device_id: int = 0
    want_probability: bool = False

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def threshold(self) -> float:
        return float(self.contract["threshold"])

    def _names(self) -> tuple[str, list[str]]:
        outs = [o.name for o in self.session.get_outputs()]
        return self.session.get_inputs()[0].name, outs

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 [N, 1, H, W] -> (mask uint8 [N, 1, H, W] 0/1, probability float32 or None)."""
        in_name, outs = self._names()
        has_mask = MASK_NAME in outs
        if self.device.startswith("cuda"):
            return self._run_cuda(batch, in_name, has_mask)
        want = [MASK_NAME] if has_mask else []
        if self.want_probability or not has_mask:
            want.append(PROB_NAME)
        res = dict(zip(want, self.session.run(want, {in_name: batch})))
        prob = res.get(PROB_NAME)
        mask = res[MASK_NAME] if has_mask else (prob > self.threshold).astype(np.uint8)
        return mask, (prob if self.want_probability else None)

    def _run_cuda(self, batch: np.ndarray, in_name: str, has_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
        io = self.session.io_binding()
        io.bind_cpu_input(in_name, np.ascontiguousarray(batch))
        bound = []
        if has_mask:
            io.bind_output(MASK_NAME, "cpu")
            bound.append(MASK_NAME)
        if self.want_probability or not has_mask:
            io.bind_output(PROB_NAME, "cpu")  # else unbound: it stays an intermediate on the GPU
            bound.append(PROB_NAME)
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        values = dict(zip(bound, io.get_outputs()))
        prob = values[PROB_NAME].numpy() if PROB_NAME in values else None
        mask = values[MASK_NAME].numpy() if has_mask else (prob > self.threshold).astype(np.uint8)
        return mask, (prob if self.want_probability else None)

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "contract": self.contract,
        }


def open_session(path: str | os.PathLike, *, device: str = "auto", threads: int | None = None, spinning: bool = False,
                 contract_path: Path | None = None, sizes: list[tuple[int, int]] | None = None, device_id: int = 0,
                 want_probability: bool = False) -> ModelSession:
    """Build the session under the device rules above; raise ContractError / DeviceError with the reason."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: model file not found")
    n_threads = int(threads) if threads else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads steal the cores the decode/encode threads need (PERFORMANCE.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")

    notes: list[str] = []
    available = ort.get_available_providers()
    search = None
    providers: list[Any] = [CPU]
    if device in ("cuda", "auto"):
        if CUDA not in available:
            msg = (f"this onnxruntime build ({ort.__version__}, providers {available}) has no CUDA execution provider; "
                   "install onnxruntime-gpu")
            if device == "cuda":
                raise DeviceError(f"--device cuda: {msg}")
            notes.append(f"device auto: CPU ({msg})")
        else:
            _preload_cuda_libraries(ort)
            search = cudnn_search_for(sizes or [])
            providers = [(CUDA, {"device_id": str(device_id), "cudnn_conv_algo_search": search,
                                 "cudnn_conv_use_max_workspace": "1", "do_copy_in_default_stream": "1"}), CPU]
    requested = [p if isinstance(p, str) else p[0] for p in providers]
    with _captured_stderr() as log:
        try:
            sess = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:
            err = e
        else:
            err = None
    if err is not None:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ContractError(f"{path}: onnxruntime cannot load it ({first})")
    actual = sess.get_providers()
    if CUDA in requested and CUDA not in actual:
        reason = _cuda_reason(log[0])
        if device == "cuda":
            raise DeviceError(f"--device cuda: the CUDA execution provider did not load ({reason}); onnxruntime would "
                              "have run on the CPU instead. Use --device cpu or auto, or install the CUDA and cuDNN "
                              "libraries this onnxruntime-gpu needs.")
        notes.append(f"device auto: CPU (CUDA did not load: {reason})")
        search = None
    elif CUDA in actual:
        notes.append(f"device {device}: CUDA (cudnn_conv_algo_search={search})")
    elif device == "cpu":
        notes.append("device cpu: CPU")

    meta = sess.get_modelmeta().custom_metadata_map
    contract = read_contract(meta, str(path), contract_path)
    if contract.get("input_kind", "uint8") != "uint8":
        raise ContractError(f"{path}: the model expects {contract.get('input_kind')!r} input (raw intensities); this "
                            "runner reads 8-bit/16-bit image files. Export the model without raw=True.")
    inputs = sess.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(uint8)":
        raise ContractError(f"{path}: expected one uint8 input [N,1,H,W] named {INPUT_NAME!r}, got "
                            f"{[(i.name, i.type, i.shape) for i in inputs]}")
    outs = {o.name for o in sess.get_outputs()}
    if not outs & {MASK_NAME, PROB_NAME}:
        raise ContractError(f"{path}: has neither a {MASK_NAME!r} nor a {PROB_NAME!r} output (outputs {sorted(outs)})")
    if want_probability and PROB_NAME not in outs:
        raise ContractError(f"{path}: has no {PROB_NAME!r} output, so probability maps cannot be saved")
    return ModelSession(
        path=path, session=sess, contract=contract, sha256=file_sha256(path),
        device=f"cuda:{device_id}" if CUDA in actual else "cpu", providers_requested=requested,
        threads=n_threads, spinning=spinning, notes=notes, cudnn_conv_algo_search=search if CUDA in actual else None,
        device_id=device_id, want_probability=want_probability,
    )
