"""All GPU rows in one call of a few minutes: ``python -m liverseg.benchmarks.gpu --out DIR``.

Results go to ``DIR/gpu-<card>/bench-gpu-<date>.{csv,md,json}`` and ``latest.md``
(``--out`` defaults to ``$OUT``, else ``runs/bench`` under the current folder).

Rows (U-Net width 64, 512x512, batch 1, 8 and 32 by default; random weights unless
``--checkpoint``): PyTorch CUDA fp32 (cuDNN, TF32 as torch's default allows it),
fp16 and bf16 autocast, fp16 autocast channels_last, fp16 with BatchNorm folded and
cuDNN conv+ReLU fused (eager and through ``torch.compile``); ONNX Runtime CUDA fp32 and fp16
with I/O binding (input uploaded once, outputs left on the device); ONNX Runtime's
TensorRT execution provider, fp16 and the int8 QDQ file (engines cached under the liverseg
cache folder, built during the untimed warm-up). Every row
records images/s, latency p50/p90/p99 per batch, achieved TFLOP/s from the
layer-counted FLOPs, its fraction of the card's dense fp16 tensor peak (from a
spec-sheet table, matched on ``torch.cuda.get_device_name``; the row says which
peak it used) and of the fp16 matmul rate measured in the same run,
``torch.cuda.max_memory_allocated`` (torch rows) and the device memory in use
(``cudaMemGetInfo``, all rows), and parity against the PyTorch CUDA fp32 row.

Method: per batch size, each backend in turn is set up, warmed up (3 calls), then
timed call by call (``torch.cuda.synchronize`` / I/O-binding runs that return when
the device is done) for ``--seconds`` or at least ``--min-iters`` calls. Rows are
not interleaved here (unlike the CPU benchmark): the GPU is not shared, and running
one backend at a time is what makes its peak-memory number its own.

Everything that fails -- no CUDA, no onnxruntime CUDA provider (the engine's
:class:`~liverseg.core.errors.DeviceError`), an export error, out of memory, the time
budget -- becomes that row's ``error``; results are written (atomically) after every
row, so a killed run keeps what it measured. The command exits 0 once the results are
written, whatever the rows say (they say it in the files); 2 for a bad checkpoint or
option.

The pieces, one job each: :func:`gpu_info` describes the card and the software,
:func:`measure` times one backend at one batch, :class:`GpuResults` writes the files,
:class:`GpuBench` runs the rows in order.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import re
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.core.cli import command, raw_argv
from liverseg.core.engine import CUDA_PROVIDER, TENSORRT_PROVIDER
from liverseg.core.errors import UsageError, describe
from liverseg.core.files import write_text_atomic

PROG = "python -m liverseg.benchmarks.gpu"

GPU_BACKENDS = (
    "torch-cuda-fp32",
    "torch-cuda-fp16",
    "torch-cuda-bf16",
    "torch-cuda-fp16-cl",
    "torch-cuda-fp16-fused",
    "torch-cuda-fp16-compiled",
    "ort-cuda-fp32",
    "ort-cuda-fp16",
    "ort-trt-fp16",
    "ort-trt-int8",
)

# Dense (no sparsity) fp16/bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s.
# Order matters: the first substring found in the device name wins.
FP16_TENSOR_PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("GH200", 989.4, "GH200 (H100 SXM5 class) dense fp16 989.4"),
    ("H200 NVL", 835.0, "H200 NVL dense fp16 835"),
    ("H200", 989.4, "H200 SXM dense fp16 989.4 (same GH100 chip and clocks as H100 SXM5)"),
    ("H100 NVL", 835.0, "H100 NVL dense fp16 835"),
    ("H100 PCIe", 756.0, "H100 PCIe dense fp16 756"),
    ("H100", 989.4, "H100 SXM5 dense fp16 989.4"),
    ("B200", 2250.0, "B200 dense fp16 2250"),
    ("A100", 312.0, "A100 dense fp16 312"),
    ("L40S", 362.1, "L40S dense fp16 362"),
    ("L40", 181.0, "L40 dense fp16 181"),
    ("L4", 121.0, "L4 dense fp16 121"),
    ("A10G", 70.0, "A10G dense fp16 70 (AWS)"),
    ("A10", 125.0, "A10 dense fp16 125"),
    ("V100", 125.0, "V100 SXM2 dense fp16 125"),
    ("T4", 65.0, "T4 dense fp16 65"),
    ("RTX 4090", 165.2, "RTX 4090 dense fp16 (fp32 accumulate) 165"),
)

COLUMNS = (
    "section",
    "gpu",
    "backend",
    "precision",
    "model",
    "width",
    "size",
    "batch",
    "iters",
    "images_per_s",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "gflop_per_image",
    "achieved_tflops",
    "fp16_peak_tflops",
    "frac_of_fp16_peak",
    "fp16_peak_source",
    "measured_fp16_matmul_tflops",
    "frac_of_measured_matmul",
    "max_memory_allocated_mb",
    "device_mem_used_mb",
    "parity_max_abs_prob",
    "parity_mask_px_diff",
    "parity_px",
    "provider",
    "error",
    "notes",
)


def fp16_peak_for(name: str) -> tuple[float | None, str]:
    """The spec-sheet dense fp16 tensor peak (TFLOP/s) of the card called ``name``, and where it comes from."""
    for key, tflops, src in FP16_TENSOR_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops, src
    return None, f"no spec-sheet entry for {name!r}"


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


@dataclass(frozen=True)
class GpuOptions:
    """Everything ``python -m liverseg.benchmarks.gpu`` accepts."""

    out: Path = Path("runs/bench")
    checkpoint: Path | None = None
    model: str = "unet"
    width: int = 64
    size: int = 512
    batches: tuple[int, ...] = (1, 8, 32)
    backends: tuple[str, ...] = GPU_BACKENDS
    seconds: float = 2.0  # timed seconds per row
    min_iters: int = 5
    max_iters: int = 2000
    budget_s: float = 200.0  # stop starting rows after this many seconds


# ------------------------------------------------------------------ info


def _cuda_info(torch: Any, info: dict[str, Any], log: Callable[[str], None]) -> None:
    """Card, driver, cuDNN settings, the spec-sheet peak and a measured fp16 matmul into ``info``."""
    props = torch.cuda.get_device_properties(0)
    info.update(
        gpu=torch.cuda.get_device_name(0),
        capability=f"{props.major}.{props.minor}",
        gpu_mem_gb=props.total_memory / 2**30,
    )
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # no nvidia-smi: the driver column stays empty
        info["driver"] = None
    torch.backends.cudnn.benchmark = True
    info["cudnn_benchmark"] = True
    try:
        info["allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    except Exception as e:  # newer torch: fp32_precision API
        info["allow_tf32"] = f"unknown ({describe(e)})"
    peak, src = fp16_peak_for(info["gpu"])
    info.update(fp16_peak_tflops=peak, fp16_peak_source=src)
    try:
        from liverseg.benchmarks.peak import cuda_matmul_peak

        info["matmul"] = cuda_matmul_peak(8192, 20, "float16")
        log(f"fp16 matmul: {info['matmul']['tflops']:.1f} TFLOP/s; spec peak {peak} ({src})")
    except Exception as e:  # recorded; the rows keep their spec-sheet fraction
        info["matmul"] = {"error": describe(e)}


def gpu_info(o: GpuOptions, log: Callable[[str], None]) -> tuple[dict[str, Any], list[str]]:
    """(the results' header: date, command, CPU, versions, providers, card, peaks, FLOPs; notes)."""
    import torch

    from liverseg.benchmarks import machine
    from liverseg.benchmarks.flops import model_gflop_per_image

    st = machine.stamp(raw_argv(PROG))
    info: dict[str, Any] = {k: st[k] for k in ("date", "command", "cpu_model", "cores", "versions")}
    notes: list[str] = []
    try:
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
    except Exception as e:  # the ORT rows will say why
        info["ort_providers"] = f"onnxruntime not importable: {describe(e)}"
    if torch.cuda.is_available():
        _cuda_info(torch, info, log)
    else:
        info.update(gpu="no CUDA device", fp16_peak_tflops=None, fp16_peak_source="no GPU")
        notes.append("torch.cuda.is_available() is False: every row records that instead of a number")
    try:
        info["gflop_per_image"] = model_gflop_per_image(o.model, {"width": o.width}, o.size)
    except Exception as e:  # the rows keep their rates without TFLOP/s
        notes.append(f"FLOP count failed: {describe(e)}")
    return info, notes


# ------------------------------------------------------------------ files


class GpuResults:
    """Writes the rows, the header and the notes to ``OUT/gpu-<card>/``: CSV, Markdown, JSON, ``latest.md``."""

    def __init__(self, o: GpuOptions, info: dict[str, Any], notes: list[str], t0: float) -> None:
        self.o = o
        self.info = info
        self.notes = notes
        self.t0 = t0
        self.tag = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    def paths(self) -> dict[str, Path]:
        d = Path(self.o.out) / f"gpu-{_slug(self.info.get('gpu') or 'no-gpu')}"
        d.mkdir(parents=True, exist_ok=True)
        stem = d / f"bench-gpu-{self.tag}"
        return {
            "csv": stem.with_suffix(".csv"),
            "md": stem.with_suffix(".md"),
            "json": stem.with_suffix(".json"),
            "latest": d / "latest.md",
        }

    def write(self, rows: list[dict[str, Any]]) -> dict[str, Path]:
        paths = self.paths()
        write_text_atomic(paths["csv"], self.csv(rows))
        md = self.markdown(rows)
        write_text_atomic(paths["md"], md)
        write_text_atomic(paths["latest"], md)
        seconds = time.perf_counter() - self.t0
        doc = {"info": self.info, "rows": rows, "notes": self.notes, "seconds": seconds}
        write_text_atomic(paths["json"], json.dumps(doc, indent=1, default=str))
        return paths

    def csv(self, rows: list[dict[str, Any]]) -> str:
        v = self.info.get("versions", {})
        stamp = {
            "date": self.info.get("date"),
            "torch": v.get("torch"),
            "onnxruntime": v.get("onnxruntime"),
            "cuda": v.get("torch_cuda"),
            "driver": self.info.get("driver"),
        }
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *stamp], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: _cell(v) for k, v in r.items()}, **stamp})
        return buf.getvalue()

    def markdown(self, rows: list[dict[str, Any]]) -> str:
        i = self.info
        mm = i.get("matmul", {})
        md = [
            f"# liverseg GPU benchmark: {i.get('gpu')}",
            "",
            f"- **date**: {i.get('date')} (took {time.perf_counter() - self.t0:.0f} s)",
            f"- **command**: `{i.get('command')}`",
            f"- **GPU**: {i.get('gpu')}, compute capability {i.get('capability')}, "
            f"{_f(i.get('gpu_mem_gb'), '.0f')} GB, driver {i.get('driver')}",
            f"- **CPU**: {i.get('cpu_model')}, {i.get('cores')} cores",
            "- **versions**: " + ", ".join(f"{k} {v}" for k, v in i.get("versions", {}).items()),
            f"- **onnxruntime providers available**: {i.get('ort_providers')}",
            f"- **fp16 tensor peak used**: {_f(i.get('fp16_peak_tflops'), '.1f')} TFLOP/s "
            f"({i.get('fp16_peak_source')}); "
            f"measured fp16 matmul ({mm.get('n')}^2): {_f(mm.get('tflops'), '.1f')} TFLOP/s",
            f"- **settings**: cudnn.benchmark {i.get('cudnn_benchmark')}, cudnn.allow_tf32 {i.get('allow_tf32')} "
            f"(fp32 rows use TF32 tensor cores when allowed)",
            "",
            "| backend | batch | images/s | p50 / p90 / p99 ms | TFLOP/s | % fp16 peak | % measured matmul "
            "| max alloc MB | device used MB | max abs dp | mask px diff | error |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        md += [_md_line(r) for r in rows]
        md += [
            "",
            f"Model: {self.o.model} width {self.o.width}, {self.o.size}x{self.o.size}, "
            f"{_f(i.get('gflop_per_image'), '.1f')} GFLOP per image (layer-counted); "
            "parity against torch-cuda-fp32 on the same inputs.",
            "",
        ]
        if self.notes:
            md += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(md)


def _cell(v: Any) -> Any:
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


def _f(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _pct_cell(v: Any) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def _md_line(r: dict[str, Any]) -> str:
    lat = (
        f"{_f(r.get('latency_ms_p50'), '.2f')} / {_f(r.get('latency_ms_p90'), '.2f')} / "
        f"{_f(r.get('latency_ms_p99'), '.2f')}"
        if r.get("latency_ms_p50") is not None
        else ""
    )
    par = f"{r['parity_mask_px_diff']} / {r['parity_px']}" if r.get("parity_px") else ""
    cells = [
        r["backend"],
        str(r["batch"]),
        _f(r.get("images_per_s"), ".1f"),
        lat,
        _f(r.get("achieved_tflops"), ".1f"),
        _pct_cell(r.get("frac_of_fp16_peak")),
        _pct_cell(r.get("frac_of_measured_matmul")),
        _f(r.get("max_memory_allocated_mb"), ".0f"),
        _f(r.get("device_mem_used_mb"), ".0f"),
        _f(r.get("parity_max_abs_prob"), ".1e"),
        par,
        (r.get("error") or "").replace("|", "/"),
    ]
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------ rows


def _time_calls(b: Any, p: Any, o: GpuOptions) -> tuple[list[float], Any]:
    """3 warm-up calls, then timed calls for ``o.seconds`` (at least ``min_iters``, at most ``max_iters``)."""
    out = None
    for _ in range(3):
        out = b.run(p)
        b.sync()
    times: list[float] = []
    t_end = time.perf_counter() + o.seconds
    while (time.perf_counter() < t_end or len(times) < o.min_iters) and len(times) < o.max_iters:
        t0 = time.perf_counter()
        out = b.run(p)
        b.sync()
        times.append(time.perf_counter() - t0)
    return times, out


def _fill_rates(row: dict[str, Any], times: list[float], batch: int) -> None:
    """Latencies, images/s, TFLOP/s and the two fractions of peak from the call times."""
    p50 = float(np.percentile(times, 50))
    row.update(
        iters=len(times),
        latency_ms_p50=1e3 * p50,
        latency_ms_p90=1e3 * float(np.percentile(times, 90)),
        latency_ms_p99=1e3 * float(np.percentile(times, 99)),
        images_per_s=batch / p50,
    )
    if row["gflop_per_image"]:
        row["achieved_tflops"] = row["gflop_per_image"] * row["images_per_s"] / 1e3
        if row["fp16_peak_tflops"]:
            row["frac_of_fp16_peak"] = row["achieved_tflops"] / row["fp16_peak_tflops"]
        if row["measured_fp16_matmul_tflops"]:
            row["frac_of_measured_matmul"] = row["achieved_tflops"] / row["measured_fp16_matmul_tflops"]


def measure(
    name: str, row: dict[str, Any], x: np.ndarray, art: Any, o: GpuOptions, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Time backend ``name`` on ``x`` into ``row``; its (probability, mask), or None after recording the error."""
    import torch

    from liverseg.benchmarks.backends import BACKENDS, build_backend

    b = None
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        free0, _ = torch.cuda.mem_get_info()
        b = build_backend(name, art.path(BACKENDS[name].needs), None)
        b.setup()
        row["provider"] = b.provider
        times, out = _time_calls(b, b.prepare(x), o)
        free1, _ = torch.cuda.mem_get_info()
        prob, mask = b.fetch(out)
        _fill_rates(row, times, x.shape[0])
        row["device_mem_used_mb"] = (free0 - free1) / 2**20
        if name.startswith("torch"):
            row["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        log(
            f"{name:20s} batch {x.shape[0]:3d}: {row['images_per_s']:9.1f} img/s, p50 {row['latency_ms_p50']:8.2f} ms, "
            f"{row.get('achieved_tflops') or 0:6.1f} TFLOP/s, {len(times)} iters"
        )
        return np.asarray(prob, dtype=np.float32), np.asarray(mask)
    except Exception as e:  # a provider that does not load (DeviceError), out of memory: the row says so
        row["error"] = describe(e)
        log(f"{name} batch {x.shape[0]}: {row['error']}\n{traceback.format_exc(limit=4)}")
        return None
    finally:
        if b is not None:
            try:
                b.teardown()
            except Exception:  # nothing to record: the numbers are taken
                pass
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def set_parity(row: dict[str, Any], out: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    """Parity of one row's output against the torch-cuda-fp32 row's on the same inputs."""
    row["parity_max_abs_prob"] = float(np.max(np.abs(out[0] - ref[0])))
    row["parity_mask_px_diff"] = int(np.count_nonzero(out[1] != ref[1]))
    row["parity_px"] = int(out[1].size)


# ------------------------------------------------------------------ run


class GpuBench:
    """Runs :class:`GpuOptions`: every backend at every batch size, the files rewritten after every row."""

    def __init__(self, o: GpuOptions) -> None:
        self.o = o
        self.t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def log(self, s: str) -> None:
        click.echo(f"[{time.perf_counter() - self.t0:6.1f}s] {s}", err=True)

    def left(self) -> float:
        return self.o.budget_s - (time.perf_counter() - self.t0)

    def run(self) -> dict[str, Path]:
        from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
        from liverseg.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(self.o.checkpoint) if self.o.checkpoint else None  # CheckpointError before any work
        self.info, notes = gpu_info(self.o, self.log)
        self.results = GpuResults(self.o, self.info, notes, self.t0)
        self.results.write(self.rows)
        ckpt = ckpt or random_checkpoint(self.o.model, self.o.width)
        art = Artifacts(ckpt, Path(tempfile.mkdtemp(prefix="liverseg-gpu-")), log=self.log)
        x_all = self.inputs(max(self.o.batches))
        for batch in self.o.batches:
            self._run_batch(np.ascontiguousarray(x_all[:batch]), art)
        paths = self.results.write(self.rows)
        self.log("wrote " + ", ".join(str(p) for p in paths.values()))
        return paths

    def _run_batch(self, x: np.ndarray, art: Any) -> None:
        """Every backend at one batch size, in the order given; parity against the torch-cuda-fp32 row."""
        ref = None
        for name in self.o.backends:
            row = self.row(name, x.shape[0])
            self.rows.append(row)
            row["error"] = row["error"] or self._skip_reason(name)
            if row["error"]:
                continue
            out = measure(name, row, x, art, self.o, self.log)
            if name == "torch-cuda-fp32" and out is not None:
                ref = out
            elif out is not None and ref is not None:
                set_parity(row, out, ref)
            self.results.write(self.rows)

    def _skip_reason(self, name: str) -> str:
        """Why ``name`` cannot run now (no CUDA, no ORT CUDA provider, the time budget), or ``""``."""
        import torch

        providers = self.info["ort_providers"]
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if name.startswith("ort-") and not (isinstance(providers, list) and CUDA_PROVIDER in providers):
            return f"onnxruntime has no CUDAExecutionProvider (providers {providers}); install onnxruntime-gpu"
        if name.startswith("ort-trt") and TENSORRT_PROVIDER not in providers:
            return f"onnxruntime has no TensorrtExecutionProvider (providers {providers}); install TensorRT"
        if self.left() < 10:
            return f"time budget ({self.o.budget_s:.0f} s) exhausted before this row"
        return ""

    def inputs(self, n: int) -> np.ndarray:
        """``n`` synthetic CT-like slices (8 distinct, cycled): the GPU machine has no shared data."""
        from liverseg.apps.synthetic import make_slice

        rng = np.random.default_rng(0)
        distinct = [make_slice(rng, (self.o.size, self.o.size), p_empty=0.0)[0] for _ in range(min(8, n))]
        return np.stack([distinct[i % len(distinct)] for i in range(n)])[:, None]

    def row(self, name: str, batch: int) -> dict[str, Any]:
        """A row with everything known before timing: card, backend, precision, case, peaks."""
        from liverseg.benchmarks.backends import BACKENDS

        d = BACKENDS.get(name)
        r: dict[str, Any] = {c: None for c in COLUMNS}
        r.update(
            section="gpu",
            gpu=self.info.get("gpu"),
            backend=name,
            model=self.o.model,
            width=self.o.width,
            size=self.o.size,
            batch=batch,
            gflop_per_image=self.info.get("gflop_per_image"),
            fp16_peak_tflops=self.info.get("fp16_peak_tflops"),
            fp16_peak_source=self.info.get("fp16_peak_source"),
            measured_fp16_matmul_tflops=(self.info.get("matmul") or {}).get("tflops"),
            error="" if d else f"unknown backend {name!r}",
            notes="",
            precision=(d.options.get("precision") or d.options.get("amp") or "fp32") if d else None,
        )
        return r


def _csv_ints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected integers >= 1, got {value!r}")
    return out


def _csv_names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="OUT",
    default=Path("runs/bench"),
    show_default=True,
    help="Results folder (also $OUT); the files go to OUT/gpu-<card>/.",
)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--model", type=click.Choice(["unet", "baseline"]), default="unet", show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--size", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("--batches", default="1,8,32", show_default=True, callback=_csv_ints, help="Comma-separated batch sizes.")
@click.option("--backends", default=",".join(GPU_BACKENDS), show_default=True, callback=_csv_names)
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Timed seconds per row.")
@click.option("--min-iters", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--max-iters", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--budget-s", type=float, default=200.0, show_default=True, help="Stop starting rows after this many seconds."
)
def main(**kwargs: Any) -> None:
    """Every GPU row (PyTorch CUDA, ONNX Runtime CUDA) at every batch size, against the card's fp16 peak."""
    o = GpuOptions(**kwargs)
    if o.min_iters > o.max_iters:
        raise UsageError(f"--min-iters {o.min_iters} is above --max-iters {o.max_iters}")
    GpuBench(o).run()


if __name__ == "__main__":
    main(prog_name=PROG)
