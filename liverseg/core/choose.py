"""Which engine and precision run a model on this machine: the ``auto`` rule.

``--engine auto|onnxruntime|openvino`` and ``--precision auto|fp32|bf16|int8|fp16`` are
resolved here, by :func:`choose`, for ``liverseg-infer``, the Python API, export
verification and the benchmark. The answer (:class:`Choice`) names the engine, the
precision, the file to load and why, and is recorded in ``summary.json``.

The rule (first row that applies):

1. A GPU is present (``--device cuda``, or ``auto`` with an NVIDIA device node) and
   the engine is not forced to OpenVINO: ONNX Runtime, its device rule decides (CUDA
   when it loads), fp32 unless a precision is asked for.
2. Otherwise the CPU: candidates in order of measured speed for the CPU's class
   (:func:`liverseg.core.engine.cpu_class`; ``$LIVERSEG_CPU_FLAGS`` simulates another
   CPU, and a note says so), see :data:`CPU_ORDER`; the first one whose
   engine is installed and allowed, whose file exists and, for a reduced precision
   under ``--precision auto``, whose accuracy gate passed. When the contract's gates
   carry this model's own speeds measured at export on a CPU of the same class
   (``images_per_second_512``; for inputs resampled to the model's pixel spacing, the
   speeds it measured at its own grid), those order the candidates instead (unmeasured
   ones after, in :data:`CPU_ORDER`'s order).

A reduced precision (bf16, int8, fp16) is taken by ``auto`` only when the export's
gate for that engine and precision passed (the contract's ``gates``, written by
``liverseg-export`` from real labelled slices: Dice within 0.005 of fp32). Asked for
explicitly, it is used either way and the note says whether it was gated.

The model's contract is read from the ONNX file's metadata without loading the model
(:func:`onnx_metadata` walks the file's top-level protobuf fields and skips the graph).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liverseg.core.engine import (
    CPU_FLAGS_ENV,
    DEVICES,
    OPENVINO_MISSING,
    PRECISIONS,
    cpu_class,
    cpu_name,
    cpuinfo_flags,
    openvino_available,
    simulated_cpu_flags,
)
from liverseg.core.errors import ContractError, UsageError

ENGINE_CHOICES = ("auto", "onnxruntime", "openvino", "tensorrt")
PRECISION_CHOICES = ("auto", *PRECISIONS)
# What each engine can run, and on what.
SUPPORTED = {
    "onnxruntime": ("fp32", "int8", "fp16"),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),  # fp16 on the fp32 file (TensorRT's own), int8 on the QDQ file
}
# Sibling files of model.onnx written by liverseg-export (bf16 is a hint on the fp32 file).
SIBLINGS = {"fp32": "model.onnx", "bf16": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}

# CPU class -> (engine, precision) from fastest to slowest. amx: measured on an Intel Xeon
# with AMX (OpenVINO int8 5.8x, bf16 4.6x, fp32 1.2x ONNX Runtime fp32 at width 16, 512x512;
# ONNX Runtime int8 1.5x). avx2: measured on the 2-vCPU AMD EPYC (AVX2 only), width 16,
# 512x512, interleaved: OpenVINO int8 1.74-1.90x ONNX Runtime fp32 and 1.17-1.23x ONNX Runtime
# int8; OpenVINO fp32 1.09-1.14x on a quiet machine but 0.64x while another process loaded
# the 2 cores, so fp32 stays on ONNX Runtime; bf16 runs as fp32 there. The VNNI and AVX-512
# rows are not measured: int8 first (VNNI is its instruction), then as on AVX2.
CPU_ORDER: dict[str, list[tuple[str, str]]] = {
    "amx": [("openvino", "int8"), ("openvino", "bf16"), ("openvino", "fp32"), ("onnxruntime", "int8"),
            ("onnxruntime", "fp32")],
    "avx512_vnni": [("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                    ("openvino", "bf16")],
    "avx_vnni": [("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                 ("openvino", "bf16")],
    "avx512": [("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
               ("openvino", "bf16")],
    "avx2": [("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
             ("openvino", "bf16")],
}  # fmt: skip
CPU_ORDER["basic"] = CPU_ORDER["avx2"]
# Measured speeds within 3% of the fastest count as equal (model_order): the export times the
# engines taking turns under the runner's load (liverseg.export.verify._speeds), so what is
# left between two exports is a few percent, and a tie costs at most that much. (It was 10%
# while they were timed one after another, and two exports of the shipped model put its
# int8 engines 14% apart one way and 6% the other.)
SPEED_TIE = 0.03
# CPU classes where OpenVINO heads the list: without the extra, a run there prints a hint.
OPENVINO_FASTER = frozenset(k for k, v in CPU_ORDER.items() if v[0][0] == "openvino")


@dataclass(frozen=True)
class Choice:
    """The engine, precision and file that run the model, and why."""

    engine: str
    precision: str
    path: Path
    device: str
    reason: str
    cpu: str = ""
    cpu_class: str = ""
    gated: bool | None = None  # reduced precision: whether its gate passed (None: no gate was measured)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


# ------------------------------------------------------------------ metadata without loading the model


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message held in ``data``."""
    out: list[tuple[int, int, bytes | int]] = []
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(data, i)
            out.append((num, wire, v))
        elif wire == 2:
            n, i = _varint(data, i)
            out.append((num, wire, data[i : i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


MAX_TOP_FIELDS = 100_000  # top-level fields read before giving up (metadata entries are one field each)


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (ModelProto field 14), read without parsing its graph."""
    out: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for _ in range(MAX_TOP_FIELDS):  # a ModelProto has a handful; a file of zeros must not loop long
                if f.tell() >= size:
                    break
                head = f.read(20)
                tag, i = _varint(head, 0)
                num, wire = tag >> 3, tag & 7
                if num == 0:
                    raise ValueError("field number 0: not a protobuf message")
                if wire == 0:
                    _, i = _varint(head, i)
                    f.seek(f.tell() - len(head) + i)
                    continue
                if wire in (1, 5):
                    f.seek(f.tell() - len(head) + i + (8 if wire == 1 else 4))
                    continue
                if wire != 2:
                    raise ValueError(f"unsupported wire type {wire}")
                n, i = _varint(head, i)
                start = f.tell() - len(head) + i
                if num == 14:
                    f.seek(start)
                    entry = dict((k, v) for k, _, v in _fields(f.read(n)))
                    key, value = entry.get(1, b""), entry.get(2, b"")
                    if isinstance(key, bytes) and isinstance(value, bytes):
                        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
                f.seek(start + n)
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: cannot read its ONNX metadata ({e})") from None
    return out


# ------------------------------------------------------------------ the rule


def gate(contract: dict[str, Any], engine: str, precision: str) -> dict[str, Any] | None:
    """The contract's gate row for ``engine/precision`` (``{"passed": bool, ...}``), or None when not measured."""
    row = (contract.get("gates") or {}).get(f"{engine}/{precision}")
    return row if isinstance(row, dict) else None


def gpu_present() -> bool:
    """An NVIDIA device node exists (onnxruntime-gpu lists CUDA as available even where there is none)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _sibling(path: Path, contract: dict[str, Any], precision: str) -> Path:
    """The file holding ``precision``: the fp32 file itself for fp32/bf16, else the export's sibling."""
    if precision in ("fp32", "bf16"):
        return path
    listed = (contract.get("variants") or {}).get(precision)
    name = listed.get("file") if isinstance(listed, dict) else None
    return path.with_name(str(name or SIBLINGS[precision]))


def choose(
    path: str | os.PathLike[str],
    *,
    engine: str = "auto",
    precision: str = "auto",
    device: str = "auto",
    flags: frozenset[str] | None = None,
    openvino: bool | None = None,
    gpu: bool | None = None,
    contract: dict[str, Any] | None = None,
    at_model_spacing: bool = False,
) -> Choice:
    """The engine, precision and file for ``path`` under the rule of the module docstring.

    ``path`` is the fp32 export (its siblings are found beside it) or a reduced-precision
    file, which is then run as it is. ``flags``, ``openvino``, ``gpu`` and ``contract``
    default to this machine and the file's own metadata (tests pass them).
    ``at_model_spacing``: the inputs will be resampled to the model's training pixel
    spacing (volumes, or slices with ``--spacing``), so the speeds the export measured
    there rank the engines, where it measured them (see :func:`model_order`).
    """
    if engine not in ENGINE_CHOICES:
        raise UsageError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: model file not found")
    if contract is None:
        from liverseg.core.contract import contract_from_metadata

        contract = contract_from_metadata(onnx_metadata(path), str(path))
    ov = openvino_available() if openvino is None else openvino
    klass = cpu_class(flags)
    cpu = cpu_name()
    notes: list[str] = []
    if flags is None and simulated_cpu_flags() is not None:
        notes.append(
            f"cpu: chosen for a simulated {klass} CPU ({CPU_FLAGS_ENV}); this one is {cpu_class(cpuinfo_flags())}"
        )
    if engine == "openvino" and not ov:
        raise UsageError(OPENVINO_MISSING)
    own = str(contract.get("precision", "fp32"))
    if own != "fp32":  # a reduced-precision file given itself: it is run as it is
        if precision not in ("auto", own):
            raise UsageError(f"{path} is the {own} model; --precision {precision} needs the fp32 model.onnx")
        engines = [e for e in ("openvino", "onnxruntime") if own in SUPPORTED[e] and (ov or e != "openvino")]
        engines = [e for e in engines if engine in ("auto", e)]
        if own == "int8" and engine == "auto" and klass not in OPENVINO_FASTER:
            engines.reverse()  # ONNX Runtime first where OpenVINO is not faster
        if not engines:
            raise UsageError(f"{path} is a {own} model, which {engine} does not run")
        g = gate(contract, engines[0], own)
        return Choice(engines[0], own, path, device, f"{path.name} is the {own} model", cpu, klass,
                      None if g is None else bool(g.get("passed")), notes)  # fmt: skip
    if engine == "tensorrt":
        return _tensorrt_choice(path, contract, precision, device, cpu, klass)
    if device == "cuda" or (device == "auto" and engine != "openvino" and (gpu_present() if gpu is None else gpu)):
        if engine == "openvino":
            raise UsageError("--device cuda: the OpenVINO engine runs on the CPU here; use --engine onnxruntime")
        prec = "fp32" if precision == "auto" else precision
        if prec not in SUPPORTED["onnxruntime"]:
            raise UsageError(f"onnxruntime does not run {prec}; use --engine openvino on the CPU")
        file = _sibling(path, contract, prec)
        if not file.is_file():
            raise UsageError(f"--precision {prec}: {file} does not exist (export it with liverseg-export)")
        g = gate(contract, "onnxruntime", prec) if prec != "fp32" else None
        return Choice("onnxruntime", prec, file, device, "a GPU is present: onnxruntime (CUDA when it loads)", cpu,
                      klass, None if g is None else bool(g.get("passed")), notes)  # fmt: skip
    skipped: list[str] = []
    order, speeds, where = model_order(contract, klass, at_model_spacing)
    for eng, prec in order:
        if engine not in ("auto", eng) or precision not in ("auto", prec):
            continue
        if eng == "openvino" and not ov:
            skipped.append(f"{eng} {prec}: not installed")
            continue
        file = _sibling(path, contract, prec)
        if not file.is_file():
            skipped.append(f"{eng} {prec}: no {file.name}")
            continue
        g = gate(contract, eng, prec) if prec != "fp32" else None
        if prec != "fp32" and precision == "auto" and not (g and g.get("passed")):
            if g is None:
                skipped.append(f"{eng} {prec}: no accuracy gate measured")
            else:  # a gate without a Dice change was not judged (too few labelled slices given to the export)
                skipped.append(
                    f"{eng} {prec}: {'failed its gate' if g.get('dice_change') is not None else 'gate not judged'}"
                )
            continue
        if prec != "fp32" and precision != "auto":
            notes.append(
                f"--precision {prec}: "
                + ("its accuracy gate passed" if g and g.get("passed") else "used as asked, although "
                   + ("it failed its accuracy gate" if g else "no accuracy gate was measured for it"))
            )  # fmt: skip
        why = "fastest measured" if not skipped else "first usable"
        if not skipped and speeds.get((eng, prec), 0.0) < max(speeds.values(), default=0.0):
            why = f"within {SPEED_TIE:.0%} of the fastest measured, first in this CPU class's order,"
        if (eng, prec) in speeds:
            why += f" for this model at export ({speeds[(eng, prec)]:.3g} slices/s {where})"
        reason = f"{why} on this {klass} CPU" + (f" ({'; '.join(skipped)})" if skipped else "")
        if not ov and engine == "auto" and klass in OPENVINO_FASTER:
            notes.append(f"hint: OpenVINO would be faster on this {klass} CPU: pip install 'liverseg[openvino]'")
        gated = None if prec == "fp32" else (None if g is None else bool(g.get("passed")))
        return Choice(eng, prec, file, "cpu" if device == "auto" else device, reason, cpu, klass, gated, notes)
    asked = f"--engine {engine} --precision {precision}"
    raise UsageError(f"{asked}: nothing on this {klass} CPU can run it ({'; '.join(skipped) or 'not supported'})")


def _tensorrt_choice(path: Path, contract: dict[str, Any], precision: str, device: str, cpu: str, klass: str) -> Choice:
    """``--engine tensorrt`` (asked for, never picked by ``auto``): fp32 unless a reduced precision is
    asked for or passed its ``tensorrt/<precision>`` gate; fp16 runs the fp32 file, int8 the QDQ file."""
    if device == "cpu":
        raise UsageError("--engine tensorrt runs on an NVIDIA GPU; use --device cuda (or auto), not cpu")
    notes: list[str] = []
    if precision == "auto":
        passed = [p for p in ("int8", "fp16") if (gate(contract, "tensorrt", p) or {}).get("passed")]
        prec = passed[0] if passed else "fp32"
    else:
        prec = precision
    if prec not in SUPPORTED["tensorrt"]:
        raise UsageError(f"--engine tensorrt runs {', '.join(SUPPORTED['tensorrt'])}, not {prec}")
    g = gate(contract, "tensorrt", prec) if prec != "fp32" else None
    if prec != "fp32" and precision != "auto" and not (g and g.get("passed")):
        notes.append(f"--precision {prec}: used as asked; no passed TensorRT accuracy gate for it")
    file = path if prec in ("fp32", "fp16") else _sibling(path, contract, prec)
    if not file.is_file():
        raise UsageError(f"--precision {prec}: {file} does not exist (export it with liverseg-export --int8)")
    reason = "asked for: ONNX Runtime's TensorRT execution provider on the GPU"
    gated = None if g is None else bool(g.get("passed"))
    return Choice("tensorrt", prec, file, "cuda" if device == "auto" else device, reason, cpu, klass, gated, notes)


def model_order(
    contract: dict[str, Any], klass: str, at_model_spacing: bool = False
) -> tuple[list[tuple[str, str]], dict[tuple[str, str], float], str]:
    """(candidates for a ``klass`` CPU, the model's own speeds, where they were measured): :data:`CPU_ORDER`,
    re-ranked by the speeds the export measured for this model on a CPU of the same class; the first is the
    earliest of :data:`CPU_ORDER` within :data:`SPEED_TIE` of the fastest.

    The speeds are ``gates[*].images_per_second_512`` (512x512 slices), or, for inputs
    resampled to the model's pixel spacing (``at_model_spacing``), the export's
    ``images_per_second_at_spacing`` (at its own grid) where it measured them: which engine
    is fastest changes with the input's size (the shipped model on an AVX2 EPYC:
    ONNX Runtime int8 8% faster end to end over 512x512 slices, OpenVINO int8 8% faster
    over a CT series resampled to its 1.5 mm).
    """
    static = CPU_ORDER.get(klass, CPU_ORDER["avx2"])
    gates = [(str(k), g) for k, g in (contract.get("gates") or {}).items() if isinstance(g, dict)]
    mine = [(k, g) for k, g in gates if g.get("cpu_class") == klass]
    key, where = "images_per_second_512", "at 512x512"
    at_spacing = [g for _, g in mine if isinstance(g.get("images_per_second_at_spacing"), (int, float))]
    if at_model_spacing and len(at_spacing) >= 2:
        size = at_spacing[0].get("size_at_spacing")
        key, where = "images_per_second_at_spacing", f"at its pixel spacing, {size}x{size}"
    speeds: dict[tuple[str, str], float] = {}
    for name, g in mine:
        eng, _, prec = name.partition("/")
        ips = g.get(key)
        if isinstance(ips, (int, float)) and ips > 0:
            speeds[(eng, prec)] = float(ips)
    if len(speeds) < 2:
        return list(static), {}, where
    ranked = sorted(static, key=lambda ep: (ep not in speeds, -speeds.get(ep, 0.0)))
    # A tie keeps the static order: one export's timing moves by a few percent, and two engines
    # within SPEED_TIE of the fastest would otherwise trade places from export to export.
    near = [ep for ep in static if speeds.get(ep, 0.0) >= (1 - SPEED_TIE) * speeds[ranked[0]]]
    ranked.remove(near[0])
    return [near[0], *ranked], speeds, where


def describe(choice: Choice) -> str:
    """One line for the log: what was chosen and why."""
    return f"engine: {choice.engine} {choice.precision} on {choice.device} ({choice.reason}) -- {choice.path.name}"
