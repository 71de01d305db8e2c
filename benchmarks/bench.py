"""Every backend side by side, interleaved round by round in one process.

Method (timm ``benchmark.py``, nanoGPT ``bench.py``):

1. Measure the machine's float32 matmul peak (``peak.py``) at the start of the run.
2. Per model (a checkpoint, or an architecture + width with seeded random weights):
   make the files once through ``liverseg.export`` (``artifacts.py``), set every
   backend up, count the network's FLOPs from its layers (``flops.py``).
3. Per case (image size x batch): every backend runs ``warmup`` untimed calls, then
   ``rounds`` rounds; in each round every backend runs the same input once
   (A B C, then B C A, ...: the order rotates so no backend always follows the same
   neighbour), timed with ``time.perf_counter`` around ``run`` + ``sync``. On a noisy
   shared machine the load changes from second to second; interleaving makes every
   backend see the same load, so the *ratios* between rows hold even where absolute
   times move.
4. Each round feeds different real CT slices (CHAOS case, expert masks). Outputs are
   fetched outside the timing and compared with eager's outputs of the same round:
   max |probability difference|, mask pixels that differ, and Dice against the expert
   masks (the Dice *change* is backend minus eager on the same slices).
5. Peak memory per backend is measured in a fresh subprocess per backend
   (``memprobe.py``), because in one process the first backend's arenas and the
   libraries loaded for the others pollute every later number; VmHWM is reset between
   cases there, so each case gets its own peak.
6. The peak is measured again at the end; the higher of the two is the reference.

Any failure -- a file that cannot be exported, a provider that does not load, an
out-of-memory run -- becomes the ``error`` column of that row; the run goes on.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.benchmarks import machine
from liverseg.benchmarks.backends import BACKENDS, Backend, build_backend, default_backends

# Columns of the "model" rows, in CSV order.
COLUMNS = (
    "section",
    "model",
    "width",
    "weights",
    "backend",
    "engine",
    "device",
    "provider",
    "precision",
    "size",
    "batch",
    "rounds",
    "images_per_s",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "speedup_vs_eager",
    "gflop_per_image",
    "achieved_gflops",
    "frac_of_peak",
    "peak_gflops",
    "peak_rss_mb",
    "setup_rss_mb",
    "parity_max_abs_prob",
    "parity_mask_px_diff",
    "parity_px",
    "parity_slices",
    "dice",
    "dice_delta",
    "threads",
    "error",
    "notes",
)


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a model width at an image size and a batch size."""

    width: int
    size: int
    batch: int


@dataclass
class BenchOptions:
    """Everything ``liverseg-bench`` accepts (see ``cli.py``)."""

    model: str = "unet"
    cases: list[Case] = field(default_factory=lambda: [Case(16, s, b) for s in (256, 512) for b in (1, 4, 8)])
    checkpoint: Path | None = None
    backends: list[str] | None = None
    rounds: int = 5
    warmup: int = 1
    max_case_seconds: float | None = None
    budget_s: float | None = None
    threads: int | None = None
    spinning: bool = False
    memory: bool = True
    memory_calls: int = 1
    peak_n: int = 4096
    peak_repeats: int = 2
    calibration_slices: int = 16
    real_data: bool = True
    data_dir: Path | None = None
    e2e: bool = True
    e2e_width: int | None = None
    e2e_slices: int | None = None
    e2e_rounds: int = 2
    e2e_backends: tuple[str, ...] = ("ort-fp32", "ort-int8")
    scaling: tuple[int, ...] = (100, 1000, 10000)
    scaling_width: int = 4
    scaling_size: int = 64
    profile_dir: Path | None = None
    workdir: Path | None = None
    seed: int = 0


def _err(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0][:300] if s else ''}".rstrip(": ")


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    from liverseg.core.metrics import image_scores

    return image_scores(pred.astype(bool), truth)["dice"]


@dataclass
class _Track:
    """Timings and parity accumulated for one backend in one case."""

    times: list[float] = field(default_factory=list)
    max_abs: float = 0.0
    px_diff: int = 0
    px: int = 0
    dice: list[float] = field(default_factory=list)
    eager_dice: list[float] = field(default_factory=list)
    slices_seen: set = field(default_factory=set)
    error: str | None = None


class Bench:
    """Runs :class:`BenchOptions`; ``run()`` returns the result dict that ``report.py`` writes."""

    def __init__(
        self, opts: BenchOptions, log: Callable[[str], None] | None = None, argv: list[str] | None = None
    ) -> None:
        self.o = opts
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.argv = argv
        self.threads = opts.threads or machine.cores()
        self.rows: list[dict[str, Any]] = []
        self.e2e_rows: list[dict[str, Any]] = []
        self.scaling_rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.artifacts: dict[int, Any] = {}

    # ------------------------------------------------------------ helpers

    def _weights_label(self, ckpt: Any) -> str:
        p = getattr(ckpt, "path", None)
        return f"checkpoint {Path(p).name} (epoch {ckpt.epoch})" if p else "random (seeded)"

    def _checkpoint(self, width: int) -> Any:
        from liverseg.benchmarks.artifacts import random_checkpoint
        from liverseg.models.checkpoint import load_checkpoint

        if self.o.checkpoint is not None:
            return load_checkpoint(self.o.checkpoint)
        return random_checkpoint(self.o.model, width, seed=self.o.seed)

    def _base_row(self, ckpt: Any, width: int, b: Backend | None, name: str, case: Case) -> dict[str, Any]:
        row = {c: None for c in COLUMNS}
        d = BACKENDS[name] if name in BACKENDS else None
        row.update(
            section="model",
            model=ckpt.model_name,
            width=width,
            weights=self._weights_label(ckpt),
            backend=name,
            size=case.size,
            batch=case.batch,
            threads=self.threads,
            error="",
            notes="",
        )
        if b is not None:
            row.update({k: v for k, v in b.describe().items() if k in row and k != "backend"})
        elif d is not None:
            row.update(
                engine="?",
                device="cuda" if d.gpu else "cpu",
                precision=d.options.get("precision", d.options.get("amp", "fp32")),
            )
        return row

    # --------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        from liverseg.benchmarks.peak import matmul_peak

        t_start = self.t_start = time.perf_counter()
        self.stamp = machine.stamp(self.argv)
        self.log(
            f"machine {self.stamp['machine_kind']}: {self.stamp['cpu_model']}, {self.stamp['cores']} cores, "
            f"ISA {' '.join(self.stamp['isa_flags'])}"
        )
        try:
            import torch

            torch.set_num_threads(self.threads)
        except Exception as e:  # pragma: no cover
            self.notes.append(f"torch.set_num_threads failed: {_err(e)}")
        self.log(f"fp32 matmul peak ({self.o.peak_n}x{self.o.peak_n}) ...")
        peak_start = matmul_peak(self.o.peak_n, self.o.peak_repeats, self.threads)
        self.log(
            f"  numpy {peak_start.get('numpy_gflops') or 0:.1f} GFLOP/s, torch {peak_start.get('torch_gflops') or 0:.1f} GFLOP/s"
        )
        tmp = tempfile.TemporaryDirectory(prefix="liverseg-bench-", dir=self.o.workdir)
        self.workdir = Path(tmp.name)
        try:
            by_width: dict[int, list[Case]] = {}
            for c in self.o.cases:
                by_width.setdefault(c.width, []).append(c)
            if self.o.checkpoint is not None and len(by_width) > 1:
                raise ValueError("--checkpoint fixes the width; give one width (or none)")
            for width, cases in by_width.items():
                self._run_width(width, cases)
            # Not under --budget-s: both are bounded by their own options (--e2e-slices, --scaling).
            if self.o.e2e:
                self._run_e2e()
            if self.o.scaling:
                self._run_scaling()
        finally:
            self.log("fp32 matmul peak again (end of run) ...")
            peak_end = matmul_peak(self.o.peak_n, self.o.peak_repeats, self.threads)
            peaks = [p["peak_gflops"] for p in (peak_start, peak_end) if p.get("peak_gflops")]
            peak = max(peaks) if peaks else None
            for row in self.rows:
                row["peak_gflops"] = peak
                if peak and row.get("achieved_gflops") is not None:
                    row["frac_of_peak"] = row["achieved_gflops"] / peak
            tmp.cleanup()
        return {
            "stamp": self.stamp,
            "peak": {"start": peak_start, "end": peak_end, "peak_gflops": peak},
            "rows": self.rows,
            "e2e": self.e2e_rows,
            "scaling": self.scaling_rows,
            "notes": self.notes,
            "options": _jsonable(asdict(self.o)),
            "seconds": time.perf_counter() - t_start,
        }

    # ----------------------------------------------------- model matrix

    def _run_width(self, width: int, cases: list[Case]) -> None:
        from liverseg.benchmarks.artifacts import Artifacts
        from liverseg.benchmarks.data import calibration_slices, real_slices, synthetic_slices
        from liverseg.benchmarks.flops import model_gflop_per_image

        ckpt = self._checkpoint(width)
        width = int(ckpt.model_args.get("width", width))
        names = list(self.o.backends or default_backends())
        self.log(f"== {ckpt.model_name} width {width} ({self._weights_label(ckpt)}): backends {', '.join(names)}")
        calib, calib_src = (
            calibration_slices(self.o.calibration_slices, self.o.data_dir) if self.o.real_data else ([], "")
        )
        if not calib:
            s = synthetic_slices(self.o.calibration_slices, 256, seed=1)
            calib, calib_src = s.images, s.source
        art = Artifacts(ckpt, self.workdir / f"w{width}", calib, log=self.log)
        self.artifacts[width] = art
        self.notes.append(f"width {width}: int8 calibration on {calib_src}")

        n_real = max(c.batch for c in cases) * self.o.rounds + self.o.warmup * max(c.batch for c in cases)
        base = real_slices(max(n_real, 8), self.o.data_dir) if self.o.real_data else None

        # Set every backend up once; the sessions take any N, H, W.
        backends: dict[str, Backend] = {}
        setup_errors: dict[str, str] = {}
        for name in names:
            try:
                d = BACKENDS[name] if name in BACKENDS else None
                if d is None:
                    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
                profile = (
                    str(self.o.profile_dir / f"{name}-w{width}")
                    if self.o.profile_dir and d.needs in ("onnx", "int8", "fp16")
                    else None
                )
                b = build_backend(name, art.path(d.needs), self.threads, spinning=self.o.spinning, profile=profile)
                b.setup()
                backends[name] = b
                self.log(f"  set up {name}: {b.provider}")
            except Exception as e:
                setup_errors[name] = _err(e)
                self.log(f"  {name}: not available: {setup_errors[name]}")

        for case in cases:  # in the order given: with --budget-s the first cases are the ones that surely run
            if self._over_budget(f"width {width} size {case.size} batch {case.batch}"):
                for name in names:
                    row = self._base_row(ckpt, width, backends.get(name), name, case)
                    row["error"] = self._budget_msg()
                    self.rows.append(row)
                continue
            gflop = None
            try:
                gflop = model_gflop_per_image(ckpt.model_name, ckpt.model_args, case.size)
            except Exception as e:
                self.notes.append(f"FLOP count failed for width {width} size {case.size}: {_err(e)}")
            if base is not None:
                data = base.resized(case.size)
            else:
                data = synthetic_slices(max(n_real, 8), case.size, seed=self.o.seed)
            tracks = self._time_case(backends, case, data)
            for name in names:
                b = backends.get(name)
                row = self._base_row(ckpt, width, b, name, case)
                row["gflop_per_image"] = gflop
                if name in setup_errors:
                    row["error"] = setup_errors[name]
                    self.rows.append(row)
                    continue
                tr = tracks[name]
                row["error"] = tr.error or ""
                if tr.times:
                    p50 = _pct(tr.times, 50)
                    row.update(
                        rounds=len(tr.times),
                        latency_ms_p50=1e3 * p50,
                        latency_ms_p90=1e3 * _pct(tr.times, 90),
                        latency_ms_p99=1e3 * _pct(tr.times, 99),
                        images_per_s=case.batch / p50,
                    )
                    if gflop is not None:
                        row["achieved_gflops"] = gflop * row["images_per_s"]
                if tr.px:
                    row.update(
                        parity_max_abs_prob=tr.max_abs,
                        parity_mask_px_diff=tr.px_diff,
                        parity_px=tr.px,
                        parity_slices=len(tr.slices_seen),
                    )
                if tr.dice:
                    row["dice"] = float(np.mean(tr.dice))
                    if tr.eager_dice:
                        row["dice_delta"] = float(np.mean(tr.dice) - np.mean(tr.eager_dice))
                if data.source.startswith("synthetic"):
                    row["notes"] = "synthetic slices"
                self.rows.append(row)
            eager = next((r for r in self.rows[-len(names) :] if r["backend"] == "eager" and r["images_per_s"]), None)
            if eager:
                for r in self.rows[-len(names) :]:
                    if r["images_per_s"]:
                        r["speedup_vs_eager"] = r["images_per_s"] / eager["images_per_s"]
            self._log_case(case, self.rows[-len(names) :])

        for b in backends.values():
            if hasattr(b, "end_profiling") and getattr(b, "profile", None):
                try:
                    prof = b.end_profiling()
                    self.notes.append(
                        f"onnxruntime profile of {b.name} (width {width}): {prof}; kernel time by op: {profile_summary(prof)}"
                    )
                except Exception as e:
                    self.notes.append(f"onnxruntime profile of {b.name} failed: {_err(e)}")
            try:
                b.teardown()
            except Exception:
                pass
        backends.clear()
        gc.collect()

        if self.o.memory and not self._over_budget(f"memory probes of width {width}"):
            self._measure_memory(width, names, cases, art, setup_errors)

    def _over_budget(self, what: str) -> bool:
        if self.o.budget_s is None or time.perf_counter() - self.t_start < self.o.budget_s:
            return False
        self.notes.append(f"skipped {what}: --budget-s {self.o.budget_s:g} exhausted")
        self.log(f"  skipped {what}: time budget exhausted")
        return True

    def _budget_msg(self) -> str:
        return f"skipped: --budget-s {self.o.budget_s:g} exhausted before this row"

    def _time_case(self, backends: dict[str, Backend], case: Case, data: Any) -> dict[str, _Track]:
        tracks = {name: _Track() for name in backends}
        active = list(backends)
        t_case = time.perf_counter()

        def call(name: str, x: np.ndarray) -> tuple[float, Any] | None:
            """(seconds of run + sync, (prob, mask)); None after recording the error."""
            b = backends[name]
            try:
                p = b.prepare(x)  # host->device copy for the CUDA rows; not timed
                t0 = time.perf_counter()
                out = b.run(p)
                b.sync()
                dt = time.perf_counter() - t0
                return dt, b.fetch(out)
            except Exception as e:
                tracks[name].error = _err(e)
                self.log(
                    f"  {name} failed at size {case.size} batch {case.batch}: {tracks[name].error}\n"
                    f"{traceback.format_exc(limit=4)}"
                )
                active.remove(name)
                return None

        # Warm-up: thread pools, arenas, oneDNN primitive caches, first-call shape inference.
        for w in range(self.o.warmup):
            x, _ = data.batch(w * case.batch, case.batch)
            for name in list(active):
                call(name, x)
        for r in range(self.o.rounds):
            if not active:
                break
            start = (self.o.warmup + r) * case.batch
            x, masks = data.batch(start, case.batch)
            k = r % len(active)
            outs: dict[str, Any] = {}
            for name in active[k:] + active[:k]:  # rotate: A B C, B C A, C A B, ...
                res = call(name, x)
                if res is not None:
                    tracks[name].times.append(res[0])
                    outs[name] = res[1]
            # Parity after the round: every output is compared with eager's on the same slices.
            for name, out in outs.items():
                self._parity(tracks[name], name, out, outs.get("eager"), masks, start, case, len(data))
            if self.o.max_case_seconds and time.perf_counter() - t_case > self.o.max_case_seconds and r + 1 >= 3:
                self.notes.append(
                    f"size {case.size} batch {case.batch} width {case.width}: stopped after {r + 1} rounds "
                    f"(--max-case-seconds {self.o.max_case_seconds:g})"
                )
                break
        return tracks

    @staticmethod
    def _parity(tr: _Track, name: str, out: Any, eager_out: Any, masks: list, start: int, case: Case, n: int) -> None:
        prob, mask = out
        if eager_out is not None and name != "eager":
            tr.max_abs = max(tr.max_abs, float(np.max(np.abs(prob.astype(np.float32) - eager_out[0]))))
            tr.px_diff += int(np.count_nonzero(mask != eager_out[1]))
            tr.px += int(mask.size)
            tr.slices_seen.update((start + i) % n for i in range(case.batch))
        if masks and all(m is not None for m in masks):
            tr.dice.extend(_dice(mask[i, 0], masks[i]) for i in range(case.batch))
            if eager_out is not None:
                tr.eager_dice.extend(_dice(eager_out[1][i, 0], masks[i]) for i in range(case.batch))

    def _log_case(self, case: Case, rows: list[dict[str, Any]]) -> None:
        self.log(f"  width {case.width} size {case.size} batch {case.batch}:")
        for r in rows:
            if r["images_per_s"]:
                sp = f" x{r['speedup_vs_eager']:.2f}" if r.get("speedup_vs_eager") else ""
                par = (
                    f", max|dp| {r['parity_max_abs_prob']:.2e}, {r['parity_mask_px_diff']} px"
                    if r.get("parity_px")
                    else ""
                )
                dd = (
                    f", dDice {r['dice_delta']:+.4f}"
                    if r.get("dice_delta") is not None and r["backend"] != "eager"
                    else ""
                )
                self.log(
                    f"    {r['backend']:18s} {r['images_per_s']:8.2f} img/s p50 {r['latency_ms_p50']:9.1f} ms{sp}{par}{dd}"
                )
            else:
                self.log(f"    {r['backend']:18s} error: {r['error']}")

    # ------------------------------------------------------------ memory

    def _measure_memory(
        self, width: int, names: list[str], cases: list[Case], art: Any, setup_errors: dict[str, str]
    ) -> None:
        """Peak RSS per backend and case, each backend in its own fresh subprocess (see ``memprobe.py``)."""
        ordered = sorted(cases, key=lambda c: (c.size * c.size * c.batch, c.size))
        for name in names:
            if name in setup_errors:
                continue
            d = BACKENDS[name]
            spec = {
                "backend": name,
                "path": str(art.path(d.needs)),
                "threads": self.threads,
                "spinning": self.o.spinning,
                "cases": [[c.size, c.batch] for c in ordered],
                "calls": self.o.memory_calls,
            }
            self.log(f"  memory probe {name} (subprocess) ...")
            res = run_memprobe(spec)
            for row in self.rows:
                if row["section"] != "model" or row["backend"] != name or row["width"] != width:
                    continue
                if res.get("error") and not res.get("cases"):
                    row["notes"] = (row["notes"] + "; " if row["notes"] else "") + f"memory probe: {res['error']}"
                    continue
                row["setup_rss_mb"] = res.get("rss_setup_kb", 0) / 1024 if res.get("rss_setup_kb") else None
                for c in res.get("cases", []):
                    if c["size"] == row["size"] and c["batch"] == row["batch"]:
                        if c.get("peak_kb"):
                            row["peak_rss_mb"] = c["peak_kb"] / 1024
                        if c.get("error"):
                            row["notes"] = (row["notes"] + "; " if row["notes"] else "") + f"memory probe: {c['error']}"

    # --------------------------------------------------------- end to end

    def _run_e2e(self) -> None:
        from liverseg.benchmarks.e2e import run_e2e

        width = self.o.e2e_width or (min(c.width for c in self.o.cases) if self.o.cases else 16)  # the cheapest
        art = self.artifacts.get(width)
        if art is None and self.o.checkpoint is not None and self.artifacts:
            art = next(iter(self.artifacts.values()))  # the checkpoint fixes the width
        if art is None:
            self.notes.append(f"end-to-end: width {width} was not in the model matrix; skipped")
            return
        try:
            self.e2e_rows = run_e2e(
                art,
                list(self.o.e2e_backends),
                threads=self.threads,
                slices=self.o.e2e_slices,
                rounds=self.o.e2e_rounds,
                data_dir=self.o.data_dir,
                workdir=self.workdir / "e2e",
                spinning=self.o.spinning,
                log=self.log,
            )
        except Exception as e:
            self.e2e_rows = [{"section": "e2e", "error": _err(e)}]
            self.log(f"end-to-end failed: {_err(e)}\n{traceback.format_exc(limit=5)}")

    def _run_scaling(self) -> None:
        from liverseg.benchmarks.scaling import run_scaling

        try:
            self.scaling_rows = run_scaling(
                list(self.o.scaling),
                width=self.o.scaling_width,
                size=self.o.scaling_size,
                threads=self.threads,
                workdir=self.workdir / "scaling",
                log=self.log,
            )
        except Exception as e:
            self.scaling_rows = [{"section": "scaling", "error": _err(e)}]
            self.log(f"scaling failed: {_err(e)}\n{traceback.format_exc(limit=5)}")


def profile_summary(path: str | Path, top: int = 6) -> str:
    """Share of kernel time per op type in an onnxruntime profile, e.g. ``Conv 87%, ConvTranspose 5%``."""
    events = json.loads(Path(path).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + float(e.get("dur", 0))
    total = sum(by_op.values()) or 1.0
    return ", ".join(f"{op} {100 * d / total:.1f}%" for op, d in sorted(by_op.items(), key=lambda kv: -kv[1])[:top])


def run_memprobe(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run ``memprobe.py`` in a fresh interpreter; its JSON answer, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "liverseg.benchmarks.memprobe", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe exited {p.returncode}: {tail[:300]}"}
    return json.loads(line)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x
