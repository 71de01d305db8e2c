"""One small class per benchmark row: ``setup`` / ``prepare`` / ``run`` / ``sync`` / ``fetch`` / ``teardown``.

Every backend runs the *whole* exported pipeline (uint8 slices in, probability and
mask out, preprocessing and threshold inside), so rows compare the same work.

* ``setup()`` loads the model from its file (checkpoint, TorchScript or ONNX). A
  backend never exports anything itself: the files come from
  :class:`liverseg.benchmarks.artifacts.Artifacts`, which calls the export package.
* ``prepare(x)`` puts a uint8 ``[N, 1, H, W]`` batch where the backend wants it
  (on the GPU for the CUDA rows: their timings are device-resident, as I/O binding
  is meant to be used); it is not timed.
* ``run(prepared)`` is the timed call; ``sync()`` waits for the device (CUDA) and is
  timed with it.
* ``fetch(outputs)`` returns ``(probability float32, mask uint8)`` numpy arrays for
  the parity check; not timed.

torch and onnxruntime are imported lazily, inside the backends that use them, so a
memory probe of an ONNX Runtime row (see ``memprobe.py``) does not pay for torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.engine import OPENVINO_MISSING, EngineOptions, OrtEngine, open_engine, openvino_available
from liverseg.core.errors import DeviceError, UsageError


class BackendUnavailable(DeviceError):
    """The backend's device cannot be used here (no GPU, provider missing); the row records why."""


class Backend:
    """Base class; subclasses set the descriptive attributes and override the hooks."""

    name = "?"
    engine = "?"  # torch | onnxruntime
    device = "cpu"
    precision = "fp32"
    needs = "checkpoint"  # which artifact file the backend loads

    def __init__(self, path: Path, threads: int | None = None, **options: Any) -> None:
        self.path = Path(path)
        self.threads = threads
        self.options = options
        self.provider = ""

    def setup(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, x: np.ndarray) -> Any:
        return x

    def run(self, prepared: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def fetch(self, outputs: Any) -> tuple[np.ndarray, np.ndarray]:
        prob, mask = outputs
        return np.asarray(prob), np.asarray(mask)

    def teardown(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "engine": self.engine,
            "device": self.device,
            "provider": self.provider,
            "precision": self.precision,
            "threads": self.threads,
        }


# ------------------------------------------------------------------ torch


def _converted_net(net: Any, channels_last: bool, half: bool = False) -> Any:
    """The network with its weights converted once (NHWC memory order, fp16) and each input converted on the
    way in; an fp16 network hands back fp32 logits (no autocast casts per call)."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format

    class Converted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.half() if half else inner
            if channels_last:
                self.inner = self.inner.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs omit memory_format

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if half:
                return self.inner(x.to(dtype=torch.float16, memory_format=fmt)).float()
            return self.inner(x.contiguous(memory_format=fmt))

    return Converted(net)


class TorchEager(Backend):
    """The original study's path: the checkpoint's pipeline in eager mode, ``torch.no_grad``.

    ``fused``: BatchNorm folded into the convolutions and conv+ReLU one cuDNN call
    (:func:`liverseg.models.fused.fuse_for_inference`); with ``amp="fp16"`` the network is
    then converted to fp16 once (no autocast casts per call). ``compiled``: the network
    through ``torch.compile`` (inductor; compiled at the first, untimed, calls).
    """

    engine = "torch"
    needs = "checkpoint"
    pipe: Any = None  # the loaded pipeline; None after teardown

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        *,
        device: str = "cpu",
        amp: str | None = None,
        channels_last: bool = False,
        fused: bool = False,
        compiled: bool = False,
        name: str = "eager",
    ) -> None:
        super().__init__(path, threads)
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.fused = fused
        self.compiled = compiled
        self.name = name
        self.precision = amp or "fp32"
        self.provider = "torch-" + device + ("-channels_last" if channels_last else "")

    def setup(self) -> None:
        import torch

        from liverseg.models import SegmentationPipeline
        from liverseg.models.checkpoint import load_checkpoint

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch reports no CUDA device")
        if self.threads and self.device == "cpu":
            torch.set_num_threads(self.threads)
        ckpt = load_checkpoint(self.path)
        net = ckpt.build_model()
        if self.fused:
            from liverseg.models.fused import fuse_for_inference

            net = fuse_for_inference(net)
        half = self.fused and self.amp == "fp16"
        if half or self.channels_last:
            net = _converted_net(net, self.channels_last, half)
        if self.compiled:
            net = torch.compile(net)  # type: ignore[assignment]  # a compiled module is called like the module
        self.pipe = SegmentationPipeline(net, ckpt.preprocessing, ckpt.threshold).eval().to(self.device)
        if self.device.startswith("cuda"):
            self.provider = f"torch-cuda:{torch.cuda.get_device_name()}" + (
                "-channels_last" if self.channels_last else ""
            )

    def prepare(self, x: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def run(self, prepared: Any) -> Any:
        import torch

        with torch.no_grad():
            if self.amp and not (self.fused and self.amp == "fp16"):
                with torch.autocast(
                    device_type=self.device.split(":")[0],
                    dtype=getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[self.amp]),
                ):
                    return self.pipe(prepared)
            return self.pipe(prepared)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def fetch(self, outputs: Any) -> tuple[np.ndarray, np.ndarray]:
        prob, mask = outputs
        return prob.float().cpu().numpy(), mask.cpu().numpy()

    def teardown(self) -> None:
        self.pipe = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class TorchScriptBackend(Backend):
    """The exported TorchScript file, frozen, with ``optimize_for_inference`` applied after loading.

    (A module saved after ``optimize_for_inference`` fails to load again, so the export
    saves the frozen module and the optimisation happens here.)
    """

    engine = "torch"
    needs = "torchscript"
    name = "torchscript"
    module: Any = None  # the loaded module; None after teardown

    def setup(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        from liverseg.export.torchscript import load_torchscript

        # The export package's loader: frozen module, optimize_for_inference applied after loading.
        self.module, _ = load_torchscript(self.path, device="cpu", optimize=True)
        self.provider = "torchscript-frozen-optimized"

    def prepare(self, x: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))

    def run(self, prepared: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module(prepared)

    def fetch(self, outputs: Any) -> tuple[np.ndarray, np.ndarray]:
        prob, mask = outputs
        return prob.numpy(), mask.numpy()

    def teardown(self) -> None:
        self.module = None


# ------------------------------------------------------------ onnxruntime


def ort_options(threads: int | None = None, spinning: bool = False, profile: str | None = None) -> EngineOptions:
    """The benchmark's ONNX Runtime settings as :class:`liverseg.core.engine.EngineOptions` (CPU device).

    Spinning is off by default: ONNX Runtime's idle worker threads otherwise keep
    spinning after a run, and on a 2-core machine slowed whatever ran next by 15-50%;
    in an interleaved benchmark that is the *other* backend. ``--spinning`` turns it
    back on to measure the difference.
    """
    return EngineOptions(device="cpu", threads=threads, spinning=spinning, profile_prefix=profile)


class OrtBackend(Backend):
    """An exported ONNX file in ONNX Runtime (CPU, or CUDA with I/O binding)."""

    engine = "onnxruntime"
    sess: Any = None  # the onnxruntime.InferenceSession; None after teardown

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        *,
        name: str = "ort-fp32",
        precision: str = "fp32",
        device: str = "cpu",
        needs: str = "onnx",
        spinning: bool = False,
        profile: str | None = None,
        engine: str = "onnxruntime",
        engine_precision: str = "fp32",
    ) -> None:
        super().__init__(path, threads)
        self.name = name
        self.precision = precision
        self.engine = engine  # "tensorrt": ONNX Runtime's TensorRT execution provider
        self.engine_precision = engine_precision  # what TensorRT builds its engines in
        self.device = device
        self.needs = needs
        self.spinning = spinning
        self.profile = profile

    def setup(self) -> None:
        """Open the file through :func:`liverseg.core.engine.open_engine`.

        A requested CUDA provider must load: the engine raises :class:`DeviceError`
        (caught by the benchmark and recorded as the row's error) instead of the silent
        CPU session onnxruntime-gpu makes without a usable CUDA.
        """
        options = replace(
            ort_options(self.threads, self.spinning, self.profile), device=self.device, precision=self.engine_precision
        )
        engine = open_engine(self.path, options, engine=self.engine)
        assert isinstance(engine, OrtEngine)  # the default engine
        self.sess = engine.session
        self.provider = self.sess.get_providers()[0]
        self.input_name = self.sess.get_inputs()[0].name
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.input_type = self.sess.get_inputs()[0].type

    def prepare(self, x: np.ndarray) -> Any:
        x = np.ascontiguousarray(x)
        if self.input_type == "tensor(float)":
            x = x.astype(np.float32)
        elif self.input_type == "tensor(float16)":
            x = x.astype(np.float16)
        if self.device != "cuda":
            return x
        import onnxruntime as ort

        binding = self.sess.io_binding()
        self._x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)  # uploaded once, outside the timing
        binding.bind_ortvalue_input(self.input_name, self._x_dev)
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self._binding = binding
        return binding

    def run(self, prepared: Any) -> Any:
        if self.device == "cuda":
            self.sess.run_with_iobinding(prepared)
            return prepared
        return self.sess.run(self.output_names, {self.input_name: prepared})

    def sync(self) -> None:
        # run() on the CPU returns when done; on CUDA, wait for the bound outputs explicitly.
        if self.device == "cuda" and getattr(self, "_binding", None) is not None:
            self._binding.synchronize_outputs()

    def fetch(self, outputs: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.device == "cuda":
            outputs = outputs.copy_outputs_to_cpu()
        named = dict(zip(self.output_names, outputs))
        prob = named.get("probability", outputs[0])
        mask = named.get("mask", outputs[-1])
        return np.asarray(prob, dtype=np.float32), np.asarray(mask)

    def end_profiling(self) -> str | None:
        return self.sess.end_profiling() if self.profile else None

    def teardown(self) -> None:
        self.sess = None


class OvBackend(Backend):
    """An exported ONNX file compiled by OpenVINO for the CPU: fp32, bf16 (a hint on the fp32 file) or int8 (QDQ file).

    The compiled model comes from liverseg's cache when it is there (the same as
    ``liverseg-infer --engine openvino``); the row's provider says the precision
    OpenVINO actually ran (bf16 asked on a CPU without bf16 runs fp32).
    """

    engine = "openvino"
    ov: Any = None  # the liverseg.core.engine.OpenVinoEngine; None after teardown

    def __init__(self, path: Path, threads: int | None = None, *, name: str = "ov-fp32", precision: str = "fp32"):
        super().__init__(path, threads)
        self.name, self.precision = name, precision
        self.needs = "int8" if precision == "int8" else "onnx"

    def setup(self) -> None:
        if not openvino_available():
            raise BackendUnavailable(OPENVINO_MISSING)
        options = EngineOptions(threads=self.threads, precision=self.precision)
        self.ov = open_engine(self.path, options, engine="openvino")
        self.provider = self.ov.provider
        self.input_name = self.ov.inputs()[0].name
        self.output_names = [o.name for o in self.ov.outputs()]

    def run(self, prepared: Any) -> Any:
        return self.ov.run({self.input_name: prepared}, self.output_names)

    def fetch(self, outputs: Any) -> tuple[np.ndarray, np.ndarray]:
        named = dict(zip(self.output_names, outputs))
        return np.asarray(named["probability"], dtype=np.float32), np.asarray(named["mask"])

    def teardown(self) -> None:
        self.ov = None


# --------------------------------------------------------------- registry


@dataclass(frozen=True)
class BackendDef:
    """How to build one named row: its class, the artifact it loads, fixed options."""

    name: str
    factory: Callable[..., Backend]
    needs: str
    gpu: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def build(self, path: Path, threads: int | None = None, **extra: Any) -> Backend:
        """Instantiate; ``extra`` options the class does not take (e.g. ORT spinning for torch) are dropped."""
        import inspect

        params = inspect.signature(self.factory).parameters
        extra = {k: v for k, v in extra.items() if k in params and v is not None}
        return self.factory(path, threads, name=self.name, **self.options, **extra)


def _defs() -> dict[str, BackendDef]:
    # One flat table, one entry per row name: long, but splitting it would scatter the registry.
    d = [
        BackendDef("eager", TorchEager, "checkpoint", description="PyTorch eager, torch.no_grad (the study's path)"),
        BackendDef(
            "eager-cl",
            TorchEager,
            "checkpoint",
            options={"channels_last": True},
            description="PyTorch eager, channels_last",
        ),
        BackendDef(
            "eager-bf16",
            TorchEager,
            "checkpoint",
            options={"amp": "bf16"},
            description="PyTorch eager, CPU bf16 autocast",
        ),
        BackendDef(
            "torchscript",
            lambda p, t, name: _named(TorchScriptBackend(p, t), name),
            "torchscript",
            description="TorchScript, frozen + optimize_for_inference",
        ),
        BackendDef(
            "ort-fp32",
            OrtBackend,
            "onnx",
            options={"precision": "fp32", "needs": "onnx"},
            description="ONNX Runtime fp32, CPU",
        ),
        BackendDef(
            "ort-int8",
            OrtBackend,
            "int8",
            options={"precision": "int8-qdq", "needs": "int8"},
            description="ONNX Runtime int8 static QDQ, CPU",
        ),
        BackendDef("ov-fp32", OvBackend, "onnx", options={"precision": "fp32"}, description="OpenVINO fp32, CPU"),
        BackendDef(
            "ov-bf16",
            OvBackend,
            "onnx",
            options={"precision": "bf16"},
            description="OpenVINO bf16 (INFERENCE_PRECISION_HINT), CPU",
        ),
        BackendDef(
            "ov-int8",
            OvBackend,
            "int8",
            options={"precision": "int8"},
            description="OpenVINO int8 (the static QDQ file), CPU",
        ),
        BackendDef(
            "torch-cuda-fp32",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda"},
            description="PyTorch CUDA fp32",
        ),
        BackendDef(
            "torch-cuda-fp16",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda", "amp": "fp16"},
            description="PyTorch CUDA fp16 autocast",
        ),
        BackendDef(
            "torch-cuda-bf16",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda", "amp": "bf16"},
            description="PyTorch CUDA bf16 autocast",
        ),
        BackendDef(
            "torch-cuda-fp16-cl",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda", "amp": "fp16", "channels_last": True},
            description="PyTorch CUDA fp16 autocast, channels_last",
        ),
        BackendDef(
            "torch-cuda-fp16-fused",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda", "amp": "fp16", "channels_last": True, "fused": True},
            description="PyTorch CUDA fp16 weights, channels_last, BatchNorm folded, cuDNN conv+ReLU",
        ),
        BackendDef(
            "torch-cuda-fp16-compiled",
            TorchEager,
            "checkpoint",
            gpu=True,
            options={"device": "cuda", "amp": "fp16", "channels_last": True, "fused": True, "compiled": True},
            description="torch-cuda-fp16-fused through torch.compile (inductor)",
        ),
        BackendDef(
            "ort-cuda-fp32",
            OrtBackend,
            "onnx",
            gpu=True,
            options={"precision": "fp32", "device": "cuda", "needs": "onnx"},
            description="ONNX Runtime CUDA fp32, I/O binding",
        ),
        BackendDef(
            "ort-cuda-fp16",
            OrtBackend,
            "fp16",
            gpu=True,
            options={"precision": "fp16", "device": "cuda", "needs": "fp16"},
            description="ONNX Runtime CUDA fp16, I/O binding",
        ),
        BackendDef(
            "ort-trt-fp16",
            OrtBackend,
            "onnx",
            gpu=True,
            options={
                "precision": "fp16",
                "device": "cuda",
                "needs": "onnx",
                "engine": "tensorrt",
                "engine_precision": "fp16",
            },
            description="ONNX Runtime TensorRT execution provider, fp16 engines (cached), I/O binding",
        ),
        BackendDef(
            "ort-trt-int8",
            OrtBackend,
            "int8",
            gpu=True,
            options={
                "precision": "int8",
                "device": "cuda",
                "needs": "int8",
                "engine": "tensorrt",
                "engine_precision": "int8",
            },
            description="ONNX Runtime TensorRT execution provider, the static QDQ file as int8 engines, I/O binding",
        ),
    ]
    return {b.name: b for b in d}


def _named(b: Backend, name: str) -> Backend:
    b.name = name
    return b


BACKENDS: dict[str, BackendDef] = _defs()
CPU_BACKENDS = (
    "eager",
    "eager-cl",
    "eager-bf16",
    "torchscript",
    "ort-fp32",
    "ort-int8",
    "ov-fp32",
    "ov-bf16",
    "ov-int8",
)
GPU_BACKENDS = ("torch-cuda-fp32", "torch-cuda-fp16", "ort-cuda-fp32", "ort-cuda-fp16")


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # a CPU without them emulates bf16 (60 s per 512x512 slice measured)


def default_backends(cuda: bool | None = None, flags: list[str] | None = None) -> list[str]:
    """The CPU rows, plus the GPU rows when a CUDA device is present.

    ``eager-bf16`` is left out on a CPU without native bf16 (AVX512-BF16 or AMX): there
    torch emulates it at about 1/300 of fp32 and one row would take the whole budget;
    ``--backends eager-bf16`` still runs it.
    """
    if cuda is None:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except Exception:
            cuda = False
    if flags is None:
        from liverseg.benchmarks.machine import cpu_flags

        flags = cpu_flags(hardware=True)  # a simulated CPU (LIVERSEG_CPU_FLAGS) would still emulate bf16
    cpu = [b for b in CPU_BACKENDS if b != "eager-bf16" or any(f in flags for f in BF16_FLAGS)]
    return cpu + (list(GPU_BACKENDS) if cuda else [])


def build_backend(name: str, path: Path, threads: int | None = None, **extra: Any) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name].build(path, threads, **extra)
