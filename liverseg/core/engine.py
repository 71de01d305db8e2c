"""Inference engines behind one interface, and the one place their sessions are made.

Every part of liverseg that runs an exported model (inference, the export's parity
check, benchmarks, the contract reader) opens it with :func:`open_engine`. An engine
holds the thread, spinning and provider settings, and enforces one device rule:

* ``cpu``: the CPU.
* ``cuda``: the CUDA execution provider, or a :class:`DeviceError` naming why it did
  not load. onnxruntime-gpu on a machine without a usable CUDA lists
  ``CUDAExecutionProvider`` as available and then silently builds a CPU-only session;
  only ``session.get_providers()`` tells the truth, so that is what is checked.
* ``auto``: CUDA when it loads, else the CPU; the choice and the reason are in
  :attr:`Engine.notes`.

Threads: ``intra_op`` threads default to the cores this process may use; idle threads
do not spin unless asked (``spinning=True``). On a 2-core machine, spinning worker
threads steal the cores that image decoding and PNG encoding need, and slow whatever
runs next (another backend in an interleaved benchmark) by 15-50%.

onnxruntime's own log lines (the CUDA load failure is printed twice, with ANSI colours)
are kept out of normal output: the default logger is set to errors only and stderr is
captured at the file-descriptor level while the session is built; the captured text
becomes the reason in the error message instead.

:data:`ENGINES` maps an engine name to its class: ONNX Runtime (CPU, CUDA), OpenVINO
(CPU; the optional extra ``liverseg[openvino]``, imported only when used) and TensorRT
(ONNX Runtime's TensorRT provider; **unverified**: it has never run on a GPU).

Precision (:attr:`EngineOptions.precision`, one of :data:`PRECISIONS`) is what the engine
is asked to compute in. For ONNX Runtime it is a property of the file (``model.onnx``
fp32, ``model.int8.onnx`` static QDQ, ``model.fp16.onnx``); the engine only refuses
``bf16``, which its CPU provider cannot do. For OpenVINO ``fp32`` and ``bf16`` are
``INFERENCE_PRECISION_HINT`` on the same file, ``int8`` is the QDQ file under OpenVINO's
own choice for the remaining layers; the precision it actually chose is in
:attr:`Engine.notes` (``bf16`` on a CPU without bf16 arithmetic runs in fp32).
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from liverseg.core.errors import ContractError, DeviceError, UsageError, first_line
from liverseg.core.extras import GPU_LIBRARIES, RUNTIME_CHOICE, installed, runtime_clash

DEVICES = ("auto", "cpu", "cuda")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
PRECISIONS = ("fp32", "bf16", "int8", "fp16")
OPENVINO_MISSING = "OpenVINO is not installed; install the extra: pip install 'liverseg[openvino]'"
CACHE_ENV = "LIVERSEG_CACHE_DIR"  # overrides $XDG_CACHE_HOME/liverseg
# Simulates a CPU: its flags replace /proc/cpuinfo's for the engine choice, the export's gates and the
# benchmark's targets (cpu_flags); what the hardware runs and caches follows the real CPU (cpuinfo_flags).
CPU_FLAGS_ENV = "LIVERSEG_CPU_FLAGS"


def check_device(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N; any other name is a :class:`UsageError`.

    A device that is named right but absent is a :class:`DeviceError` later, where the engine
    or torch is asked for it.
    """
    if value in DEVICES or (isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {value!r}")


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs a model; the defaults are the inference runner's."""

    device: str = "cpu"  # auto | cpu | cuda
    device_id: int = 0
    threads: int | None = None  # intra-op threads; None: usable_cores()
    spinning: bool = False  # let idle worker threads spin (see the module docstring)
    cuda_options: Mapping[str, str] = field(default_factory=dict)  # extra CUDA provider options
    profile_prefix: str | None = None  # write an onnxruntime profile with this file prefix
    precision: str = "fp32"  # what the engine computes in (module docstring); not a file choice

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise UsageError(f"threads must be >= 1, got {self.threads!r}")

    @property
    def n_threads(self) -> int:
        return int(self.threads) if self.threads else usable_cores()


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type (numpy name: ``uint8``, ``float32``, ``float16``) and shape of a model input or output."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


class Engine(abc.ABC):
    """One loaded model file that runs numpy arrays on one device."""

    name: ClassVar[str]

    def __init__(self, path: Path, options: EngineOptions) -> None:
        self.path = path
        self.options = options
        self.notes: list[str] = []  # how the device was chosen, for reports

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where it actually runs: ``cpu`` or ``cuda:<id>``."""

    @property
    @abc.abstractmethod
    def provider(self) -> str:
        """The engine-specific name of what runs it (for ONNX Runtime the first execution provider)."""

    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def metadata(self) -> dict[str, str]:
        """The model file's string metadata (where the liverseg contract lives)."""

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The named outputs (all when None) for one call, as numpy arrays."""


# ------------------------------------------------------------------ ONNX Runtime

_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _ort() -> ModuleType:
    """onnxruntime, or a UsageError naming the extra to install (or the clash of its two builds to resolve)."""
    clash = runtime_clash()
    if clash is not None:
        raise UsageError(clash)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise UsageError(f"ONNX Runtime is not installed ({first_line(e)}): {RUNTIME_CHOICE}") from None

    ort.set_default_logger_severity(3)  # errors only; warnings such as node placement are noise here
    return ort


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
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


def cuda_reason(log: str) -> str:
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


def _driver_loads() -> bool:
    """True when the NVIDIA driver's libcuda.so.1 loads (a machine without it has no usable GPU)."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def cuda_missing(reason: str) -> tuple[str, str]:
    """(one short line, the full line) of what CUDA lacks: the driver, the library and its pip package.

    ``reason`` is :func:`cuda_reason`'s line. The full line also lists the pip packages of
    the CUDA libraries that are not installed (``liverseg[gpu]`` installs them all).
    """
    m = re.search(r"(lib[A-Za-z]+)\.so[.0-9]*(?=: cannot open shared object file)", reason)
    lib = m.group(0) if m else None
    absent = sorted(set(GPU_LIBRARIES.values()) - set(installed(set(GPU_LIBRARIES.values()))))
    fix = "pip install 'liverseg[gpu]' (CUDA 13, cuDNN 9)"
    pkgs = f"; not installed: {', '.join(absent)}" if absent else ""
    if (lib or "").startswith("libcuda.so") or not _driver_loads():
        short = "no NVIDIA driver on this machine (libcuda.so.1 does not load)"
        return short, short + pkgs
    if lib is not None:
        pkg = GPU_LIBRARIES.get(lib.split(".so")[0])
        short = f"{lib} is missing" + (f" (pip package {pkg})" if pkg else "")
    else:
        short = reason
    return short, f"{short}{pkgs}; {fix}"


def _preload_cuda_libraries(ort: ModuleType) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels when they are installed that way (ORT >= 1.21).

    Without this, onnxruntime-gpu finds only system-wide CUDA libraries. Its messages
    (printed on stdout) are swallowed; a failure shows up as the session's CUDA reason.
    """
    if not hasattr(ort, "preload_dlls"):
        return
    with captured_stderr(), contextlib.redirect_stdout(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:  # missing wheels: the session creation reports why CUDA did not load
            pass


def ort_session_options(options: EngineOptions) -> Any:
    """``onnxruntime.SessionOptions`` for ``options``: threads, no spinning, sequential, quiet."""
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = options.n_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if options.spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if options.profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = options.profile_prefix
    return so


class OrtEngine(Engine):
    """A model file in ONNX Runtime, on the CPU or the CUDA execution provider."""

    name = "onnxruntime"

    def __init__(self, path: Path, options: EngineOptions) -> None:
        super().__init__(path, options)
        if options.precision == "bf16":
            raise UsageError(
                "onnxruntime's CPU provider has no bf16 precision; use --engine openvino (pip install "
                "'liverseg[openvino]') or --precision fp32/int8"
            )
        ort = _ort()
        providers = self._providers(ort)
        requested = [p if isinstance(p, str) else p[0] for p in providers]
        printed = io.StringIO()  # onnxruntime prints "EP Error ... Falling back" when a provider fails to register
        with captured_stderr() as log, contextlib.redirect_stdout(printed):
            try:
                sess = ort.InferenceSession(str(path), ort_session_options(options), providers=providers)
            except Exception as e:
                err: Exception | None = e
            else:
                err = None
        if err is not None:
            raise ContractError(f"{path}: onnxruntime cannot load it ({first_line(err)})")
        self.session: Any = sess
        # a failing call raises with its message; onnxruntime's own coloured log line of it would repeat it on stderr
        self.run_options: Any = ort.RunOptions()
        self.run_options.log_severity_level = 4
        self._loaded(requested, sess.get_providers(), log[0] + printed.getvalue())

    def _loaded(self, requested: list[str], actual: list[str], log: str) -> None:
        """Check the providers that loaded against those asked for; say how the device was chosen."""
        options = self.options
        if CUDA_PROVIDER in requested and CUDA_PROVIDER not in actual:
            short, missing = cuda_missing(cuda_reason(log))
            if options.device == "cuda":
                # one line of at most 300 characters (liverseg.core.errors.first_line): what is missing first
                raise DeviceError(f"--device cuda: CUDA did not load, onnxruntime would have run on the CPU: {missing}")
            self.notes.append(f"device auto: CPU (CUDA not usable: {short})")
        elif CUDA_PROVIDER in actual:
            search = options.cuda_options.get("cudnn_conv_algo_search")
            self.notes.append(
                f"device {options.device}: CUDA" + (f" (cudnn_conv_algo_search={search})" if search else "")
            )
        elif options.device == "cpu":
            self.notes.append("device cpu: CPU")

    def _providers(self, ort: ModuleType) -> list[Any]:
        if self.options.device == "cpu":
            return [CPU_PROVIDER]
        available = ort.get_available_providers()
        if CUDA_PROVIDER not in available:
            msg = (
                f"this onnxruntime ({', '.join(installed(('onnxruntime', 'onnxruntime-gpu'))) or 'build'} "
                f"{ort.__version__}, providers {available}) has no CUDA execution provider; for CUDA: pip uninstall "
                "-y onnxruntime && pip install 'liverseg[gpu]'"
            )
            if self.options.device == "cuda":
                raise DeviceError(f"--device cuda: {msg}")
            self.notes.append("device auto: CPU (this onnxruntime is the CPU build; 'liverseg[gpu]' runs on CUDA)")
            return [CPU_PROVIDER]
        _preload_cuda_libraries(ort)
        cuda = {"device_id": str(self.options.device_id), **self.options.cuda_options}
        return [(CUDA_PROVIDER, cuda), CPU_PROVIDER]

    @property
    def device(self) -> str:
        return f"cuda:{self.options.device_id}" if self.provider == CUDA_PROVIDER else "cpu"

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, _ORT_TYPES.get(i.type, i.type), tuple(i.shape)) for i in self.session.get_inputs()]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(o.name, _ORT_TYPES.get(o.type, o.type), tuple(o.shape)) for o in self.session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        return list(self.session.run(outputs, dict(feeds), self.run_options))


class TensorRtEngine(OrtEngine):
    """ONNX Runtime's TensorRT execution provider on a GPU: the parts of the graph TensorRT takes run as
    TensorRT engines, the rest on CUDA (then the CPU). **Unverified**: written without a GPU that had
    TensorRT, it has never run; only the provider options and the errors are tested.

    ``fp16`` builds the engines with fp16 kernels allowed (on the fp32 file); ``int8`` runs the
    export's static QDQ file as explicit int8 quantization. Built engines and the timing
    cache are kept under ``cache_root()/tensorrt/<file>-<sha>`` (one build per file, input
    shape, precision and card: the first run of a shape builds, later runs load). Needs
    onnxruntime-gpu and TensorRT's libraries (``libnvinfer``; pip: ``tensorrt-cu13``).
    """

    name = "tensorrt"

    def __init__(self, path: Path, options: EngineOptions) -> None:
        if options.device == "cpu":
            raise UsageError("--engine tensorrt runs on an NVIDIA GPU; use --device cuda (or auto), not cpu")
        self.cache_dir = cache_root() / "tensorrt" / f"{path.stem}-{_file_digest(path)}"
        super().__init__(path, options)

    def _providers(self, ort: ModuleType) -> list[Any]:
        available = ort.get_available_providers()
        if TENSORRT_PROVIDER not in available:
            raise DeviceError(
                f"--engine tensorrt: this onnxruntime ({ort.__version__}, providers {available}) has no TensorRT "
                "execution provider; install onnxruntime-gpu ('liverseg[gpu]') and TensorRT (pip install tensorrt-cu13)"
            )
        _preload_cuda_libraries(ort)
        return [
            (TENSORRT_PROVIDER, tensorrt_options(self.options, self.cache_dir)),
            (CUDA_PROVIDER, {"device_id": str(self.options.device_id), **self.options.cuda_options}),
            CPU_PROVIDER,
        ]

    def _loaded(self, requested: list[str], actual: list[str], log: str) -> None:
        if TENSORRT_PROVIDER not in actual:
            reason = cuda_reason(log)  # "libnvinfer.so.10 failed to load: ..." where that is the cause
            raise DeviceError(
                f"--engine tensorrt: TensorRT did not load (onnxruntime ran {actual}): {reason}; it needs "
                "TensorRT's libnvinfer (pip install tensorrt-cu13) and CUDA"
            )
        self.notes.append(
            f"engine tensorrt (unverified: never run on a GPU before; compare its masks with --engine onnxruntime): "
            f"{self.options.precision} engines cached in {self.cache_dir}"
        )

    @property
    def device(self) -> str:
        return f"cuda:{self.options.device_id}" if self.provider in (TENSORRT_PROVIDER, CUDA_PROVIDER) else "cpu"


def tensorrt_options(options: EngineOptions, cache_dir: Path) -> dict[str, str]:
    """The TensorRT execution provider's options for ``options``: precision flags and the engine cache."""
    if options.precision == "bf16":
        raise UsageError("--engine tensorrt: use --precision fp32, fp16 or int8 (bf16 is OpenVINO's, on the CPU)")
    return {
        "device_id": str(options.device_id),
        "trt_fp16_enable": str(options.precision == "fp16"),
        "trt_int8_enable": str(options.precision == "int8"),  # the QDQ file: explicit quantization
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
    }


def _file_hash(path: Path) -> Any:
    """A SHA-256 object fed with the file's bytes (cache keys; liverseg.core.contract imports this module)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h


def _file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    return str(_file_hash(path).hexdigest()[:16])


# ------------------------------------------------------------------ OpenVINO


def cpuinfo_flags() -> frozenset[str]:
    """The hardware's feature flags from /proc/cpuinfo (empty where there is none), whatever
    ``$LIVERSEG_CPU_FLAGS`` says: what compiled code and emulated arithmetic depend on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def simulated_cpu_flags() -> frozenset[str] | None:
    """The flags ``$LIVERSEG_CPU_FLAGS`` names (a simulated CPU), or None when it is unset or empty.

    The only place the variable is read. Flags are separated by spaces or commas, as
    /proc/cpuinfo spells them (``avx2,fma,avx512f,avx512_vnni,avx512_bf16``); ``none``
    alone is a CPU with none of them (the ``basic`` class).
    """
    value = os.environ.get(CPU_FLAGS_ENV, "").replace(",", " ").split()
    if not value:
        return None
    return frozenset() if value == ["none"] else frozenset(value)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the engine choice sees them: ``$LIVERSEG_CPU_FLAGS`` where set, else
    /proc/cpuinfo's (:func:`cpuinfo_flags`)."""
    simulated = simulated_cpu_flags()
    return cpuinfo_flags() if simulated is None else simulated


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_class(flags: frozenset[str] | None = None) -> str:
    """What the CPU offers a convolution: ``amx``, ``avx512_vnni``, ``avx512``, ``avx_vnni``, ``avx2`` or ``basic``."""
    flags = cpu_flags() if flags is None else flags
    if {"amx_bf16", "amx_tile"} <= flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx_vnni" in flags:
        return "avx_vnni"
    return "avx2" if "avx2" in flags else "basic"


def cache_root() -> Path:
    """``$LIVERSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/liverseg``, else ``~/.cache/liverseg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liverseg"


def _openvino() -> ModuleType:
    try:
        import openvino
    except ImportError as e:
        raise UsageError(f"{OPENVINO_MISSING} ({first_line(e)})") from None
    return openvino


def openvino_available() -> bool:
    """True when the OpenVINO extra is installed (nothing is imported)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


# liverseg precision -> OpenVINO INFERENCE_PRECISION_HINT (None: OpenVINO's own choice, for the QDQ file)
_OV_HINTS: dict[str, str | None] = {"fp32": "f32", "bf16": "bf16", "int8": None}


class OpenVinoEngine(Engine):
    """A model file compiled by OpenVINO for the CPU; compiled models are cached.

    The cache folder is ``cache_root()/openvino/<key>``, the key a hash of the file's
    SHA-256, OpenVINO's version, the precision and the CPU (name and flags), so a
    changed file, engine, precision or machine compiles afresh and an unchanged one
    loads the compiled blob (OpenVINO's ``CACHE_DIR``). The file's metadata is kept
    beside it (``metadata.json``), so a cached run does not parse the ONNX file.
    """

    name = "openvino"

    def __init__(self, path: Path, options: EngineOptions) -> None:
        super().__init__(path, options)
        if options.device == "cuda":
            raise DeviceError("--device cuda: the OpenVINO engine runs on the CPU here; use --engine onnxruntime")
        if options.precision not in _OV_HINTS:
            raise UsageError(
                f"the OpenVINO engine runs fp32, bf16 or int8 on the CPU, not {options.precision} "
                "(fp16 is for CUDA: --engine onnxruntime --device cuda)"
            )
        ov = _openvino()
        self.version = str(ov.get_version())
        core = ov.Core()
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": options.n_threads,
        }
        hint = _OV_HINTS[options.precision]
        if hint is not None:
            config["INFERENCE_PRECISION_HINT"] = hint
        self.cache_dir: Path | None = cache_root() / "openvino" / self.cache_key(path, options.precision)
        meta = self._cached_metadata()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(self.cache_dir)
        except OSError as e:  # a read-only home: compile every time, and say so
            self.notes.append(f"openvino: no compiled-model cache ({first_line(e)})")
            self.cache_dir = None
        try:
            if meta is None:
                model = core.read_model(str(path))
                meta = self._read_metadata(model)
                compiled = core.compile_model(model if self.cache_dir is None else str(path), "CPU", config)
                self._save_metadata(meta)
                cached = False
            else:
                compiled = core.compile_model(str(path), "CPU", config)
                cached = True
        except Exception as e:
            raise ContractError(f"{path}: OpenVINO cannot load it ({first_line(e)})") from None
        self.compiled: Any = compiled
        self.request: Any = compiled.create_infer_request()
        self._meta = meta
        self._out_names: list[str] | None = None
        self.actual_precision = _ov_precision(compiled.get_property("INFERENCE_PRECISION_HINT"))
        # The QDQ file's Q/DQ layers run in int8 whatever the hint says (the hint, fp32 on most CPUs, is
        # the precision of the layers between them), so "int8 -> fp32" would read as a fallback.
        ran = f"{options.precision} -> {self.actual_precision}" if hint is not None else "int8 (QDQ file)"
        self.notes.append(
            f"device {options.device}: CPU (OpenVINO {self.version}, precision {ran}"
            f"{', compiled model from the cache' if cached else ''})"
        )

    @staticmethod
    def cache_key(path: Path, precision: str) -> str:
        """The compiled-model cache key: file hash, OpenVINO version, precision and CPU."""
        ov = _openvino()
        key = _file_hash(path)
        # the real CPU's flags: a compiled model belongs to the hardware, whatever CPU is simulated
        for part in (str(ov.get_version()), precision, cpu_name(), " ".join(sorted(cpuinfo_flags()))):
            key.update(b"\n" + part.encode())
        return key.hexdigest()[:24]

    def _cached_metadata(self) -> dict[str, str] | None:
        import json

        assert self.cache_dir is not None
        try:
            meta = json.loads((self.cache_dir / "metadata.json").read_text())
        except (OSError, ValueError):
            return None
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else None

    def _save_metadata(self, meta: dict[str, str]) -> None:
        if self.cache_dir is None:
            return
        import json

        from liverseg.core.files import write_text_atomic

        try:
            write_text_atomic(self.cache_dir / "metadata.json", json.dumps(meta))
        except OSError:
            pass

    @staticmethod
    def _read_metadata(model: Any) -> dict[str, str]:
        """The ONNX file's metadata_props, which OpenVINO keeps under rt_info["framework"]."""
        if not model.has_rt_info(["framework"]):
            return {}
        keys = model.get_rt_info(["framework"]).astype(dict)
        return {str(k): str(model.get_rt_info(["framework", k]).astype(str)) for k in keys}

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def provider(self) -> str:
        """``OpenVINO CPU <precision it runs>``; the int8 file is ``int8`` (its other layers: see the notes)."""
        return f"OpenVINO CPU {'int8' if self.options.precision == 'int8' else self.actual_precision}"

    @staticmethod
    def _spec(port: Any) -> TensorSpec:
        shape = tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
        # A tensor has several names (ONNX's own output name and the exporter's "/Greater_output_0"
        # style ones); get_any_name() picks any. The graph's name is the one without a path.
        names = sorted(port.get_names(), key=lambda n: (n.startswith("/"), n))
        return TensorSpec(names[0], np.dtype(port.get_element_type().to_dtype()).name, shape)

    def inputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self.compiled.inputs]

    def outputs(self) -> list[TensorSpec]:
        return [self._spec(p) for p in self.compiled.outputs]

    def metadata(self) -> dict[str, str]:
        return dict(self._meta)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        res = self.request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        if outputs is None:
            if self._out_names is None:
                self._out_names = [o.name for o in self.outputs()]
            outputs = self._out_names
        return [np.asarray(res[n]) for n in outputs]


def _ov_precision(value: Any) -> str:
    """OpenVINO's element type (``<Type: 'float32'>``, ``bf16``) as a liverseg precision name."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    for name, words in (("bf16", ("bf16", "bfloat16")), ("fp16", ("f16", "float16")), ("fp32", ("f32", "float32"))):
        if any(w in text for w in words):
            return name
    return text


ENGINES: dict[str, type[Engine]] = {"onnxruntime": OrtEngine, "openvino": OpenVinoEngine, "tensorrt": TensorRtEngine}


def open_engine(
    path: str | os.PathLike[str], options: EngineOptions | None = None, *, engine: str = "onnxruntime"
) -> Engine:
    """Load ``path`` in the named engine under the device rule above.

    Raises :class:`ContractError` when the file is missing or the engine cannot load it,
    :class:`DeviceError` when the requested device cannot be used.
    """
    try:
        cls = ENGINES[engine]
    except KeyError:
        raise UsageError(f"unknown engine {engine!r}; valid: {', '.join(sorted(ENGINES))}") from None
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: model file not found")
    return cls(path, options or EngineOptions())
