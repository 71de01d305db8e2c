"""All GPU rows in one call of a few minutes: ``python -m liverseg.benchmarks.gpu --out DIR``.

Rows (U-Net width 64, 512x512, batch 1, 8 and 32 by default; random weights unless
``--checkpoint``): PyTorch CUDA fp32 (cuDNN, TF32 as torch's default allows it),
fp16 and bf16 autocast, fp16 autocast channels_last; ONNX Runtime CUDA fp32 and fp16
with I/O binding (input uploaded once, outputs left on the device). Every row
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

Everything that fails -- no CUDA, no onnxruntime CUDA provider, an export error,
out of memory, the time budget -- becomes that row's ``error``; results are written
after every row, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

GPU_BACKENDS = (
    "torch-cuda-fp32",
    "torch-cuda-fp16",
    "torch-cuda-bf16",
    "torch-cuda-fp16-cl",
    "ort-cuda-fp32",
    "ort-cuda-fp16",
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
    for key, tflops, src in FP16_TENSOR_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops, src
    return None, f"no spec-sheet entry for {name!r}"


def _err(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0][:300] if s else ''}"


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


class GpuBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.info: dict[str, Any] = {}

    def log(self, s: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {s}", file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.a.budget_s - (time.perf_counter() - self.t0)

    # -------------------------------------------------------------- files

    def out_paths(self) -> dict[str, Path]:
        gpu = _slug(self.info.get("gpu") or "no-gpu")
        d = Path(self.a.out) / f"gpu-{gpu}"
        d.mkdir(parents=True, exist_ok=True)
        stem = d / f"bench-gpu-{self.tag}"
        return {
            "csv": stem.with_suffix(".csv"),
            "md": stem.with_suffix(".md"),
            "json": stem.with_suffix(".json"),
            "latest": d / "latest.md",
        }

    def write(self) -> dict[str, Path]:
        paths = self.out_paths()
        with open(paths["csv"], "w", newline="") as f:
            w = csv.DictWriter(
                f, fieldnames=[*COLUMNS, "date", "torch", "onnxruntime", "cuda", "driver"], extrasaction="ignore"
            )
            w.writeheader()
            for r in self.rows:
                w.writerow(
                    {
                        **{k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()},
                        "date": self.info.get("date"),
                        "torch": self.info.get("versions", {}).get("torch"),
                        "onnxruntime": self.info.get("versions", {}).get("onnxruntime"),
                        "cuda": self.info.get("versions", {}).get("torch_cuda"),
                        "driver": self.info.get("driver"),
                    }
                )
        md = self.markdown()
        paths["md"].write_text(md)
        paths["latest"].write_text(md)
        paths["json"].write_text(
            json.dumps(
                {"info": self.info, "rows": self.rows, "notes": self.notes, "seconds": time.perf_counter() - self.t0},
                indent=1,
                default=str,
            )
        )
        return paths

    def markdown(self) -> str:
        i = self.info

        def f(v: Any, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        md = [
            f"# liverseg GPU benchmark: {i.get('gpu')}",
            "",
            f"- **date**: {i.get('date')} (took {time.perf_counter() - self.t0:.0f} s)",
            f"- **command**: `{i.get('command')}`",
            f"- **GPU**: {i.get('gpu')}, compute capability {i.get('capability')}, {f(i.get('gpu_mem_gb'), '.0f')} GB, driver {i.get('driver')}",
            f"- **CPU**: {i.get('cpu_model')}, {i.get('cores')} cores",
            "- **versions**: " + ", ".join(f"{k} {v}" for k, v in i.get("versions", {}).items()),
            f"- **onnxruntime providers available**: {i.get('ort_providers')}",
            f"- **fp16 tensor peak used**: {f(i.get('fp16_peak_tflops'), '.1f')} TFLOP/s ({i.get('fp16_peak_source')}); "
            f"measured fp16 matmul ({i.get('matmul', {}).get('n')}^2): {f(i.get('matmul', {}).get('tflops'), '.1f')} TFLOP/s",
            f"- **settings**: cudnn.benchmark {i.get('cudnn_benchmark')}, cudnn.allow_tf32 {i.get('allow_tf32')} "
            f"(fp32 rows use TF32 tensor cores when allowed)",
            "",
            "| backend | batch | images/s | p50 / p90 / p99 ms | TFLOP/s | % fp16 peak | % measured matmul | max alloc MB | device used MB | max abs dp | mask px diff | error |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lat = (
                f"{f(r.get('latency_ms_p50'), '.2f')} / {f(r.get('latency_ms_p90'), '.2f')} / {f(r.get('latency_ms_p99'), '.2f')}"
                if r.get("latency_ms_p50") is not None
                else ""
            )
            par = f"{r['parity_mask_px_diff']} / {r['parity_px']}" if r.get("parity_px") else ""
            md.append(
                f"| {r['backend']} | {r['batch']} | {f(r.get('images_per_s'), '.1f')} | {lat} | {f(r.get('achieved_tflops'), '.1f')} | "
                f"{f(100 * r['frac_of_fp16_peak'], '.1f') + '%' if r.get('frac_of_fp16_peak') is not None else ''} | "
                f"{f(100 * r['frac_of_measured_matmul'], '.1f') + '%' if r.get('frac_of_measured_matmul') is not None else ''} | "
                f"{f(r.get('max_memory_allocated_mb'), '.0f')} | {f(r.get('device_mem_used_mb'), '.0f')} | "
                f"{f(r.get('parity_max_abs_prob'), '.1e')} | {par} | {(r.get('error') or '').replace('|', '/')} |"
            )
        md += [
            "",
            f"Model: {self.a.model} width {self.a.width}, {self.a.size}x{self.a.size}, "
            f"{f(self.info.get('gflop_per_image'), '.1f')} GFLOP per image (layer-counted); parity against torch-cuda-fp32 on the same inputs.",
            "",
        ]
        if self.notes:
            md += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(md)

    # ---------------------------------------------------------------- run

    def run(self) -> int:
        from liverseg.benchmarks import machine
        from liverseg.benchmarks.flops import model_gflop_per_image

        self.tag = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        st = machine.stamp(["python -m liverseg.benchmarks.gpu", *sys.argv[1:]])
        self.info.update(
            date=st["date"],
            command=st["command"],
            cpu_model=st["cpu_model"],
            cores=st["cores"],
            versions=st["versions"],
        )
        import torch

        try:
            import onnxruntime as ort

            self.info["ort_providers"] = ort.get_available_providers()
        except Exception as e:
            self.info["ort_providers"] = f"onnxruntime not importable: {_err(e)}"
        cuda = torch.cuda.is_available()
        if cuda:
            props = torch.cuda.get_device_properties(0)
            self.info.update(
                gpu=torch.cuda.get_device_name(0),
                capability=f"{props.major}.{props.minor}",
                gpu_mem_gb=props.total_memory / 2**30,
            )
            try:
                import subprocess

                self.info["driver"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            except Exception:
                self.info["driver"] = None
            torch.backends.cudnn.benchmark = True
            self.info["cudnn_benchmark"] = True
            try:
                self.info["allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
            except Exception as e:  # newer torch: fp32_precision API
                self.info["allow_tf32"] = f"unknown ({_err(e)})"
            peak, src = fp16_peak_for(self.info["gpu"])
            self.info.update(fp16_peak_tflops=peak, fp16_peak_source=src)
            try:
                from liverseg.benchmarks.peak import cuda_matmul_peak

                self.info["matmul"] = cuda_matmul_peak(8192, 20, "float16")
                self.log(f"fp16 matmul: {self.info['matmul']['tflops']:.1f} TFLOP/s; spec peak {peak} ({src})")
            except Exception as e:
                self.info["matmul"] = {"error": _err(e)}
        else:
            self.info.update(gpu="no CUDA device", fp16_peak_tflops=None, fp16_peak_source="no GPU")
            self.notes.append("torch.cuda.is_available() is False: every row records that instead of a number")
        try:
            self.info["gflop_per_image"] = model_gflop_per_image(self.a.model, {"width": self.a.width}, self.a.size)
        except Exception as e:
            self.notes.append(f"FLOP count failed: {_err(e)}")
        self.write()

        from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
        from liverseg.models.checkpoint import load_checkpoint

        ckpt = (
            load_checkpoint(self.a.checkpoint) if self.a.checkpoint else random_checkpoint(self.a.model, self.a.width)
        )
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="liverseg-gpu-"))
        art = Artifacts(ckpt, work, log=self.log)
        x_all = self.inputs(max(self.a.batches))
        names = [b for b in self.a.backends.split(",") if b]
        ort_cuda = (
            isinstance(self.info["ort_providers"], list) and "CUDAExecutionProvider" in self.info["ort_providers"]
        )
        for batch in self.a.batches:
            x = np.ascontiguousarray(x_all[:batch])
            ref = None
            for name in names:
                row = self.row(name, batch)
                self.rows.append(row)
                if not cuda:
                    row["error"] = "no CUDA device (torch.cuda.is_available() is False)"
                    continue
                if name.startswith("ort-") and not ort_cuda:
                    row["error"] = (
                        f"onnxruntime has no CUDAExecutionProvider (providers {self.info['ort_providers']}); "
                        "install onnxruntime-gpu"
                    )
                    continue
                if self.left() < 10:
                    row["error"] = f"time budget ({self.a.budget_s:.0f} s) exhausted before this row"
                    continue
                out = self.measure(name, row, x, art)
                if name == "torch-cuda-fp32" and out is not None:
                    ref = out
                elif out is not None and ref is not None:
                    row["parity_max_abs_prob"] = float(np.max(np.abs(out[0] - ref[0])))
                    row["parity_mask_px_diff"] = int(np.count_nonzero(out[1] != ref[1]))
                    row["parity_px"] = int(out[1].size)
                self.write()
        paths = self.write()
        self.log("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0

    def inputs(self, n: int) -> np.ndarray:
        """``n`` synthetic CT-like slices (8 distinct, cycled): the GPU machine has no shared data."""
        from liverseg.apps.synthetic import make_slice

        rng = np.random.default_rng(0)
        distinct = [make_slice(rng, (self.a.size, self.a.size), p_empty=0.0)[0] for _ in range(min(8, n))]
        return np.stack([distinct[i % len(distinct)] for i in range(n)])[:, None]

    def row(self, name: str, batch: int) -> dict[str, Any]:
        from liverseg.benchmarks.backends import BACKENDS

        d = BACKENDS.get(name)
        r = {c: None for c in COLUMNS}
        r.update(
            section="gpu",
            gpu=self.info.get("gpu"),
            backend=name,
            model=self.a.model,
            width=self.a.width,
            size=self.a.size,
            batch=batch,
            gflop_per_image=self.info.get("gflop_per_image"),
            fp16_peak_tflops=self.info.get("fp16_peak_tflops"),
            fp16_peak_source=self.info.get("fp16_peak_source"),
            measured_fp16_matmul_tflops=(self.info.get("matmul") or {}).get("tflops"),
            error="",
            notes="",
            precision=(d.options.get("precision") or d.options.get("amp") or "fp32") if d else None,
        )
        if name not in (BACKENDS or {}):
            r["error"] = f"unknown backend {name!r}"
        return r

    def measure(self, name: str, row: dict[str, Any], x: np.ndarray, art: Any) -> tuple[np.ndarray, np.ndarray] | None:
        import torch

        from liverseg.benchmarks.backends import BACKENDS, build_backend

        if row["error"]:
            return None
        b = None
        try:
            d = BACKENDS[name]
            path = art.path(d.needs)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            free0, total = torch.cuda.mem_get_info()
            b = build_backend(name, path, None)
            b.setup()
            row["provider"] = b.provider
            p = b.prepare(x)
            out = None
            for _ in range(3):
                out = b.run(p)
                b.sync()
            times: list[float] = []
            t_end = time.perf_counter() + self.a.seconds
            while (time.perf_counter() < t_end or len(times) < self.a.min_iters) and len(times) < self.a.max_iters:
                t0 = time.perf_counter()
                out = b.run(p)
                b.sync()
                times.append(time.perf_counter() - t0)
            free1, _ = torch.cuda.mem_get_info()
            prob, mask = b.fetch(out)
            p50 = float(np.percentile(times, 50))
            row.update(
                iters=len(times),
                latency_ms_p50=1e3 * p50,
                latency_ms_p90=1e3 * float(np.percentile(times, 90)),
                latency_ms_p99=1e3 * float(np.percentile(times, 99)),
                images_per_s=x.shape[0] / p50,
                max_memory_allocated_mb=torch.cuda.max_memory_allocated() / 2**20 if name.startswith("torch") else None,
                device_mem_used_mb=(free0 - free1) / 2**20,
            )
            if row["gflop_per_image"]:
                row["achieved_tflops"] = row["gflop_per_image"] * row["images_per_s"] / 1e3
                if row["fp16_peak_tflops"]:
                    row["frac_of_fp16_peak"] = row["achieved_tflops"] / row["fp16_peak_tflops"]
                if row["measured_fp16_matmul_tflops"]:
                    row["frac_of_measured_matmul"] = row["achieved_tflops"] / row["measured_fp16_matmul_tflops"]
            self.log(
                f"{name:20s} batch {x.shape[0]:3d}: {row['images_per_s']:9.1f} img/s, p50 {row['latency_ms_p50']:8.2f} ms, "
                f"{row.get('achieved_tflops') or 0:6.1f} TFLOP/s, {len(times)} iters"
            )
            return np.asarray(prob, dtype=np.float32), np.asarray(mask)
        except Exception as e:
            row["error"] = _err(e)
            self.log(f"{name} batch {x.shape[0]}: {row['error']}\n{traceback.format_exc(limit=4)}")
            return None
        finally:
            if b is not None:
                try:
                    b.teardown()
                except Exception:
                    pass
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m liverseg.benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"), help="results folder (default $OUT)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default="unet")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--backends", default=",".join(GPU_BACKENDS))
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--max-iters", type=int, default=2000)
    p.add_argument("--budget-s", type=float, default=200.0, help="stop starting rows after this many seconds")
    a = p.parse_args(argv)
    a.batches = [int(b) for b in str(a.batches).split(",") if b]
    return a


def main(argv: list[str] | None = None) -> int:
    return GpuBench(parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
