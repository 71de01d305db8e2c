"""Which engine and precision run a model on this machine: the ``auto`` rule.

``--engine auto|onnxruntime|openvino`` and ``--precision auto|fp32|bf16|int8|fp16`` are
resolved here, by :func:`choose`, for ``liverseg-infer``, the Python API, export
verification and the benchmark. The answer (:class:`Choice`) names the engine, the
precision, the file to load and why, and is recorded in ``summary.json``.

The rule (first row that applies):

1. A GPU is present (``--device cuda``, or ``auto`` with an NVIDIA device node) and
   the engine is not forced to OpenVINO: ONNX Runtime, its device rule decides (CUDA
   when it loads), fp32 unless a precision is asked for.
2. Otherwise the CPU: the candidates of :data:`CPU_ORDER` for the CPU's class
   (:func:`liverseg.core.engine.cpu_class`; ``$LIVERSEG_CPU_FLAGS`` simulates another
   CPU, and a note says so); the first one whose engine is installed and allowed, whose
   file exists and, for a reduced precision under ``--precision auto``, whose accuracy
   gate passed.

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
    # unverified (never run on a GPU): fp16 on the fp32 file (TensorRT's own), int8 on the QDQ file
    "tensorrt": ("fp32", "fp16", "int8"),
}
# Sibling files of model.onnx written by liverseg-export (bf16 is a hint on the fp32 file).
SIBLINGS = {"fp32": "model.onnx", "bf16": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}

# CPU class -> (engine, precision) from fastest to slowest; DEFAULT_ORDER for every class not listed. Two
# candidates keep an order of their own only where a measurement put them at least 10% apart:
# * amx (an Intel Xeon with AMX, 2026-12, width 16, 512x512, model only, img/s): OpenVINO int8 57.3, bf16
#   45.2, ONNX Runtime int8 15.1, OpenVINO fp32 11.8, ONNX Runtime fp32 9.9.
# * the rest (the 2-vCPU AMD EPYC, AVX2 only, 2026-12-04): int8 before fp32 (ONNX Runtime int8 1.41x,
#   OpenVINO int8 1.82x ONNX Runtime fp32 at width 16, 512x512, bench-20261204-180319.md; 1.45x end to end
#   for the shipped model, reference-infer-engines-20261204.json); fp32 on ONNX Runtime (OpenVINO fp32
#   1.09-1.14x on a quiet machine, 0.64x while another process loaded the 2 cores). Which int8 engine is
#   faster depends on the model and the input's size: for the shipped model end to end ONNX Runtime by
#   8-14% over 512x512 slices (infer-int8-engines-ab-20261204.json), OpenVINO by 9% over a series
#   resampled to its 1.5 mm (volume-int8-engines-ab-20261204.json), OpenVINO by 1.28x at width 16 on a
#   512 grid (model only); OpenVINO stays first. bf16 without bf16 arithmetic runs as fp32: last.
DEFAULT_ORDER: list[tuple[str, str]] = [("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"),
                                        ("openvino", "fp32"), ("openvino", "bf16")]  # fmt: skip
CPU_ORDER: dict[str, list[tuple[str, str]]] = {
    "amx": [("openvino", "int8"), ("openvino", "bf16"), ("onnxruntime", "int8"), ("openvino", "fp32"),
            ("onnxruntime", "fp32")],
}  # fmt: skip


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
) -> Choice:
    """The engine, precision and file for ``path`` under the rule of the module docstring.

    ``path`` is the fp32 export (its siblings are found beside it) or a reduced-precision
    file, which is then run as it is. ``flags``, ``openvino``, ``gpu`` and ``contract``
    default to this machine and the file's own metadata (tests pass them).
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
    for eng, prec in CPU_ORDER.get(klass, DEFAULT_ORDER):
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
        why = "first in the measured order" if not skipped else "first usable"
        reason = f"{why} on this {klass} CPU" + (f" ({'; '.join(skipped)})" if skipped else "")
        if not ov and engine == "auto" and klass == "amx":  # 3.8x ONNX Runtime int8 there; within 10% elsewhere
            notes.append(f"hint: OpenVINO would be faster on this {klass} CPU: pip install 'liverseg[openvino]'")
        gated = None if prec == "fp32" else (None if g is None else bool(g.get("passed")))
        return Choice(eng, prec, file, "cpu" if device == "auto" else device, reason, cpu, klass, gated, notes)
    asked = f"--engine {engine} --precision {precision}"
    raise UsageError(f"{asked}: nothing on this {klass} CPU can run it ({'; '.join(skipped) or 'not supported'})")


def _tensorrt_choice(path: Path, contract: dict[str, Any], precision: str, device: str, cpu: str, klass: str) -> Choice:
    """``--engine tensorrt`` (asked for, never picked by ``auto``; **unverified**: it has never run on a GPU):
    fp32 unless a reduced precision is asked for or passed its ``tensorrt/<precision>`` gate; fp16 runs the
    fp32 file, int8 the QDQ file."""
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
    reason = "asked for: ONNX Runtime's TensorRT execution provider on the GPU, unverified (never run on a GPU)"
    gated = None if g is None else bool(g.get("passed"))
    return Choice("tensorrt", prec, file, "cuda" if device == "auto" else device, reason, cpu, klass, gated, notes)


def describe(choice: Choice) -> str:
    """One line for the log: what was chosen and why."""
    return f"engine: {choice.engine} {choice.precision} on {choice.device} ({choice.reason}) -- {choice.path.name}"
