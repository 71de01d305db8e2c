"""Every backend side by side, interleaved round by round in one process.

Method (timm ``benchmark.py``, nanoGPT ``bench.py``):

1. Measure the machine's float32 matmul peak (``peak.py``) at the start of the run.
2. Per model (a checkpoint, or an architecture + width with seeded random weights):
   make the files once through ``liverseg.export`` (``artifacts.py``), set every
   backend up, count the network's FLOPs from its layers (``flops.py``).
3. Per case (image size x batch): every backend runs ``warmup`` untimed calls, then
   ``rounds`` rounds; in each round every backend runs the same input once
   (A B C, then B C A, ...: the order rotates so no backend always follows the same
   neighbour), timed with ``time.perf_counter`` around ``run`` + ``sync``
   (``rounds.py``). On a noisy shared machine the load changes from second to second;
   interleaving makes every backend see the same load, so the *ratios* between rows
   hold even where absolute times move.
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
out-of-memory run -- becomes the ``error`` column of that row; the run goes on. Only
what makes the whole run pointless is raised before any measurement (see
:meth:`Bench.preflight`): a bad checkpoint (:class:`~liverseg.core.errors.CheckpointError`)
or options that cannot work together (:class:`~liverseg.core.errors.UsageError`).

The pieces, one job each: :class:`BackendSet` sets the backends of one model up and
tears them down, :class:`~liverseg.benchmarks.rounds.RoundLoop` times one case,
:func:`case_rows` turns its tracks into result rows, :func:`attach_memory` adds the
memory probe's numbers, and :class:`Bench` runs the sections in order.
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

from liverseg.benchmarks import machine
from liverseg.benchmarks.backends import BACKENDS, Backend, build_backend, default_backends
from liverseg.benchmarks.rounds import RoundLoop, Track
from liverseg.core.errors import UsageError, describe

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
    "rate_kind",
    "rate_gflops",
    "frac_of_rate",
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
    e2e_batch: int = 1
    e2e_repeat: int = 1
    e2e_backends: tuple[str, ...] = ("auto", "ort-fp32", "ort-int8")
    gate_slices: int = 16
    scaling: tuple[int, ...] = (100, 1000, 10000)
    scaling_width: int = 4
    scaling_size: int = 64
    profile_dir: Path | None = None
    workdir: Path | None = None
    seed: int = 0


def weights_label(ckpt: Any) -> str:
    """``checkpoint best.pt (epoch 12)`` or ``random (seeded)``."""
    p = getattr(ckpt, "path", None)
    return f"checkpoint {Path(p).name} (epoch {ckpt.epoch})" if p else "random (seeded)"


def by_width(cases: list[Case]) -> dict[int, list[Case]]:
    """The cases grouped by model width, widths and cases in the order given."""
    out: dict[int, list[Case]] = {}
    for c in cases:
        out.setdefault(c.width, []).append(c)
    return out


# ------------------------------------------------------------------ rows


def base_row(ckpt: Any, width: int, b: Backend | None, name: str, case: Case, threads: int) -> dict[str, Any]:
    """A model row with everything known before timing: model, backend description, case."""
    row: dict[str, Any] = {c: None for c in COLUMNS}
    d = BACKENDS.get(name)
    row.update(
        section="model",
        model=ckpt.model_name,
        width=width,
        weights=weights_label(ckpt),
        backend=name,
        size=case.size,
        batch=case.batch,
        threads=threads,
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


def rate_of(row: dict[str, Any]) -> str:
    """The matmul rate a CPU row is measured against: ``int8`` for the int8 files, ``bf16`` for a bf16
    row that ran in bf16 (OpenVINO runs a bf16 hint as fp32 on a CPU without bf16: its provider says
    so), else ``fp32``."""
    precision = str(row.get("precision") or "fp32")
    if precision.startswith("int8"):
        return "int8"
    if precision == "bf16" and "fp32" not in str(row.get("provider") or ""):
        return "bf16"
    return "fp32"


def set_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_eager`` of every measured row of one case, when eager was measured."""
    eager = next((r for r in rows if r["backend"] == "eager" and r["images_per_s"]), None)
    if eager:
        for r in rows:
            if r["images_per_s"]:
                r["speedup_vs_eager"] = r["images_per_s"] / eager["images_per_s"]


def case_rows(
    ckpt: Any,
    width: int,
    backends: BackendSet,
    case: Case,
    tracks: dict[str, Track],
    gflop: float | None,
    threads: int,
    synthetic: bool,
) -> list[dict[str, Any]]:
    """One row per backend name for ``case``: a setup error, or the track's timings and parity."""
    rows = []
    for name in backends.names:
        row = base_row(ckpt, width, backends.ready.get(name), name, case, threads)
        row["gflop_per_image"] = gflop
        if name in backends.errors:
            row["error"] = backends.errors[name]
        else:
            row.update(tracks[name].row_fields(case.batch, gflop))
            if synthetic:
                row["notes"] = "synthetic slices"
        rows.append(row)
    set_speedups(rows)
    return rows


def _add_note(row: dict[str, Any], note: str) -> None:
    row["notes"] = (row["notes"] + "; " if row["notes"] else "") + note


def attach_memory(rows: list[dict[str, Any]], width: int, name: str, res: dict[str, Any]) -> None:
    """Put one memory probe's answer (:func:`run_memprobe`) into the model rows of ``name`` at ``width``."""
    for row in rows:
        if row["section"] != "model" or row["backend"] != name or row["width"] != width:
            continue
        if res.get("error") and not res.get("cases"):
            _add_note(row, f"memory probe: {res['error']}")
            continue
        row["setup_rss_mb"] = res["rss_setup_kb"] / 1024 if res.get("rss_setup_kb") else None
        for c in res.get("cases", []):
            if c["size"] == row["size"] and c["batch"] == row["batch"]:
                if c.get("peak_kb"):
                    row["peak_rss_mb"] = c["peak_kb"] / 1024
                if c.get("error"):
                    _add_note(row, f"memory probe: {c['error']}")


def log_case(log: Callable[[str], None], case: Case, rows: list[dict[str, Any]]) -> None:
    """One line per row of a case: rate, latency, speed-up, parity, Dice change or the error."""
    log(f"  width {case.width} size {case.size} batch {case.batch}:")
    for r in rows:
        if not r["images_per_s"]:
            log(f"    {r['backend']:18s} error: {r['error']}")
            continue
        sp = f" x{r['speedup_vs_eager']:.2f}" if r.get("speedup_vs_eager") else ""
        par = f", max|dp| {r['parity_max_abs_prob']:.2e}, {r['parity_mask_px_diff']} px" if r.get("parity_px") else ""
        dd = f", dDice {r['dice_delta']:+.4f}" if r.get("dice_delta") is not None and r["backend"] != "eager" else ""
        log(f"    {r['backend']:18s} {r['images_per_s']:8.2f} img/s p50 {r['latency_ms_p50']:9.1f} ms{sp}{par}{dd}")


# -------------------------------------------------------------- backends


@dataclass
class BackendSet:
    """The backends of one model, set up once (the sessions take any N, H, W); failures keep their error."""

    names: list[str]
    ready: dict[str, Backend] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        names: list[str],
        art: Any,
        threads: int,
        *,
        spinning: bool = False,
        profile_dir: Path | None = None,
        width: int = 0,
        log: Callable[[str], None] = lambda s: None,
    ) -> BackendSet:
        """Build and set up every named backend on ``art``'s files; a failure becomes that name's error."""
        out = cls(list(names))
        for name in names:
            try:
                d = BACKENDS.get(name)
                if d is None:
                    raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
                onnx = d.needs in ("onnx", "int8", "fp16")
                profile = str(profile_dir / f"{name}-w{width}") if profile_dir and onnx else None
                b = build_backend(name, art.path(d.needs), threads, spinning=spinning, profile=profile)
                b.setup()
                out.ready[name] = b
                log(f"  set up {name}: {b.provider}")
            except Exception as e:  # no GPU, a provider that does not load, an export error: the row says so
                out.errors[name] = describe(e)
                log(f"  {name}: not available: {out.errors[name]}")
        return out

    def close(self, notes: list[str], width: int) -> None:
        """End the ONNX Runtime profiles (their summaries go to ``notes``) and tear every backend down."""
        for b in self.ready.values():
            if getattr(b, "profile", None) and hasattr(b, "end_profiling"):
                try:
                    prof = b.end_profiling()
                    notes.append(
                        f"onnxruntime profile of {b.name} (width {width}): {prof}; "
                        f"kernel time by op: {profile_summary(prof)}"
                    )
                except Exception as e:  # a profile that cannot be read never loses the numbers
                    notes.append(f"onnxruntime profile of {b.name} failed: {describe(e)}")
            try:
                b.teardown()
            except Exception:  # nothing to record: the numbers are taken
                pass
        self.ready.clear()
        gc.collect()


# ------------------------------------------------------------------ run


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
        self.gates: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.artifacts: dict[int, Any] = {}
        self.checkpoint: Any = None
        self.t_start = time.perf_counter()

    def preflight(self) -> None:
        """Raise, before any measurement, what would make the whole run pointless.

        :class:`UsageError` for options that cannot work together,
        :class:`~liverseg.core.errors.CheckpointError` for a ``--checkpoint`` that cannot be loaded.
        Loads the checkpoint once; a second call does nothing.
        """
        if self.checkpoint is not None:
            return
        if self.o.checkpoint is not None and len(by_width(self.o.cases)) > 1:
            raise UsageError("--checkpoint fixes the width; give one width (or none)")
        if self.o.checkpoint is not None:
            from liverseg.models.checkpoint import load_checkpoint

            self.checkpoint = load_checkpoint(self.o.checkpoint)

    def run(self) -> dict[str, Any]:
        self.preflight()
        self.t_start = time.perf_counter()
        self.stamp = machine.stamp(self.argv)
        self._set_threads()
        peak_start = self._peak("")
        tmp = tempfile.TemporaryDirectory(prefix="liverseg-bench-", dir=self.o.workdir)
        self.workdir = Path(tmp.name)
        try:
            for width, cases in by_width(self.o.cases).items():
                self._run_width(width, cases)
            # Not under --budget-s: both are bounded by their own options (--e2e-slices, --scaling).
            if self.o.e2e:
                self._run_e2e()
            if self.o.scaling:
                self._run_scaling()
        finally:
            peak_end = self._peak(" again (end of run)")
            peak = self._apply_peak(peak_start, peak_end)
            tmp.cleanup()
        return {
            "stamp": self.stamp,
            "peak": {"start": peak_start, "end": peak_end, "peak_gflops": peak},
            "rows": self.rows,
            "e2e": self.e2e_rows,
            "scaling": self.scaling_rows,
            "gates": self.gates,
            "notes": self.notes,
            "options": _jsonable(asdict(self.o)),
            "seconds": time.perf_counter() - self.t_start,
        }

    # ------------------------------------------------------------ peak

    def _set_threads(self) -> None:
        st = self.stamp
        self.log(
            f"machine {st['machine_kind']}: {st['cpu_model']}, {st['cores']} cores, ISA {' '.join(st['isa_flags'])}"
        )
        try:
            import torch

            torch.set_num_threads(self.threads)
        except Exception as e:  # pragma: no cover - torch absent or broken: the torch rows will say so
            self.notes.append(f"torch.set_num_threads failed: {describe(e)}")

    def _peak(self, when: str) -> dict[str, Any]:
        from liverseg.benchmarks.peak import matmul_peak

        self.log(f"fp32 matmul peak{when} ({self.o.peak_n}x{self.o.peak_n}) ...")
        p = matmul_peak(self.o.peak_n, self.o.peak_repeats, self.threads)
        self.log(
            f"  numpy {p.get('numpy_gflops') or 0:.1f} GFLOP/s, torch {p.get('torch_gflops') or 0:.1f} GFLOP/s, "
            f"torch bf16 {p.get('torch_bf16_gflops') or 0:.1f} GFLOP/s, ONNX Runtime int8 "
            f"{p.get('ort_int8_gflops') or 0:.1f} GOP/s"
        )
        return p

    def _apply_peak(self, start: dict[str, Any], end: dict[str, Any]) -> float | None:
        """The higher of the two peaks, put into every model row with its fraction; and beside it the
        rate of the row's own precision (:func:`rate_of`) with the row's share of it."""
        peaks = [p["peak_gflops"] for p in (start, end) if p.get("peak_gflops")]
        peak = max(peaks) if peaks else None
        rates = {"fp32": peak}
        for kind, key in (("bf16", "torch_bf16_gflops"), ("int8", "ort_int8_gflops")):
            got = [p[key] for p in (start, end) if p.get(key)]
            rates[kind] = max(got) if got else None
        for row in self.rows:
            row["peak_gflops"] = peak
            if peak and row.get("achieved_gflops") is not None:
                row["frac_of_peak"] = row["achieved_gflops"] / peak
            if row.get("device") == "cpu":
                kind = rate_of(row)
                row["rate_kind"], row["rate_gflops"] = kind, rates.get(kind)
                if row["rate_gflops"] and row.get("achieved_gflops") is not None:
                    row["frac_of_rate"] = row["achieved_gflops"] / row["rate_gflops"]
        return peak

    # ---------------------------------------------------- model matrix

    def _model(self, width: int) -> tuple[Any, int, Any]:
        """(checkpoint, its width, its exported files) for one width of the matrix."""
        from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint
        from liverseg.benchmarks.data import calibration_slices, synthetic_slices

        ckpt = self.checkpoint or random_checkpoint(self.o.model, width, seed=self.o.seed)
        width = int(ckpt.model_args.get("width", width))
        calib, calib_src = (
            calibration_slices(self.o.calibration_slices, self.o.data_dir) if self.o.real_data else ([], "")
        )
        if not calib:
            s = synthetic_slices(self.o.calibration_slices, 256, seed=1)
            calib, calib_src = s.images, s.source
        art = Artifacts(ckpt, self.workdir / f"w{width}", calib, log=self.log)
        self.artifacts[width] = art
        self.notes.append(f"width {width}: int8 calibration on {calib_src}")
        return ckpt, width, art

    def _run_width(self, width: int, cases: list[Case]) -> None:
        """Every case of one model width: files, backends, the cases in the order given, memory probes."""
        from liverseg.benchmarks.data import real_slices

        ckpt, width, art = self._model(width)
        names = list(self.o.backends or default_backends())
        self.log(f"== {ckpt.model_name} width {width} ({weights_label(ckpt)}): backends {', '.join(names)}")
        biggest = max(c.batch for c in cases)
        n_slices = max(biggest * (self.o.rounds + self.o.warmup), 8)
        base = real_slices(n_slices, self.o.data_dir) if self.o.real_data else None
        backends = BackendSet.open(
            names,
            art,
            self.threads,
            spinning=self.o.spinning,
            profile_dir=self.o.profile_dir,
            width=width,
            log=self.log,
        )
        try:
            for case in cases:  # in the order given: with --budget-s the first cases are the ones that surely run
                self._run_case(ckpt, width, backends, case, base, n_slices)
        finally:
            backends.close(self.notes, width)
        if self.o.memory and not self._over_budget(f"memory probes of width {width}"):
            self._measure_memory(width, names, cases, art, backends.errors)

    def _run_case(self, ckpt: Any, width: int, backends: BackendSet, case: Case, base: Any, n_slices: int) -> None:
        from liverseg.benchmarks.data import synthetic_slices
        from liverseg.benchmarks.flops import model_gflop_per_image

        if self._over_budget(f"width {width} size {case.size} batch {case.batch}"):
            for name in backends.names:
                row = base_row(ckpt, width, backends.ready.get(name), name, case, self.threads)
                row["error"] = f"skipped: --budget-s {self.o.budget_s:g} exhausted before this row"
                self.rows.append(row)
            return
        gflop = None
        try:
            grid = getattr(getattr(ckpt, "preprocessing", None), "size", None)  # a model resized inside its graph
            gflop = model_gflop_per_image(ckpt.model_name, ckpt.model_args, *(grid or (case.size, case.size)))
        except Exception as e:  # the rows keep their timings without the FLOP columns
            self.notes.append(f"FLOP count failed for width {width} size {case.size}: {describe(e)}")
        data = base.resized(case.size) if base is not None else synthetic_slices(n_slices, case.size, seed=self.o.seed)
        loop = RoundLoop(backends.ready, self.o.warmup, self.o.rounds, self.o.max_case_seconds, self.log, self.notes)
        tracks = loop.run(case, data)
        synthetic = data.source.startswith("synthetic")
        rows = case_rows(ckpt, width, backends, case, tracks, gflop, self.threads, synthetic)
        self.rows.extend(rows)
        log_case(self.log, case, rows)

    def _over_budget(self, what: str) -> bool:
        if self.o.budget_s is None or time.perf_counter() - self.t_start < self.o.budget_s:
            return False
        self.notes.append(f"skipped {what}: --budget-s {self.o.budget_s:g} exhausted")
        self.log(f"  skipped {what}: time budget exhausted")
        return True

    # ------------------------------------------------------------ memory

    def _measure_memory(
        self, width: int, names: list[str], cases: list[Case], art: Any, setup_errors: dict[str, str]
    ) -> None:
        """Peak RSS per backend and case, each backend in its own fresh subprocess (see ``memprobe.py``)."""
        ordered = sorted(cases, key=lambda c: (c.size * c.size * c.batch, c.size))
        for name in names:
            if name in setup_errors:
                continue
            spec = {
                "backend": name,
                "path": str(art.path(BACKENDS[name].needs)),
                "threads": self.threads,
                "spinning": self.o.spinning,
                "cases": [[c.size, c.batch] for c in ordered],
                "calls": self.o.memory_calls,
            }
            self.log(f"  memory probe {name} (subprocess) ...")
            attach_memory(self.rows, width, name, run_memprobe(spec))

    # --------------------------------------------------------- end to end

    def _run_e2e(self) -> None:
        from liverseg.benchmarks.e2e import AUTO, run_e2e

        width = self.o.e2e_width or (min(c.width for c in self.o.cases) if self.o.cases else 16)  # the cheapest
        art = self.artifacts.get(width)
        if art is None and self.o.checkpoint is not None and self.artifacts:
            art = next(iter(self.artifacts.values()))  # the checkpoint fixes the width
        if art is None:
            self.notes.append(f"end-to-end: width {width} was not in the model matrix; skipped")
            return
        if AUTO in self.o.e2e_backends and self.o.gate_slices:
            self._gate(art)
        try:
            self.e2e_rows = run_e2e(
                art,
                list(self.o.e2e_backends),
                threads=self.threads,
                slices=self.o.e2e_slices,
                rounds=self.o.e2e_rounds,
                batch=self.o.e2e_batch,
                repeat=self.o.e2e_repeat,
                data_dir=self.o.data_dir,
                workdir=self.workdir / "e2e",
                spinning=self.o.spinning,
                log=self.log,
            )
        except Exception as e:  # recorded as the section's one row
            self.e2e_rows = [{"section": "e2e", "error": describe(e)}]
            self.log(f"end-to-end failed: {describe(e)}\n{traceback.format_exc(limit=5)}")

    def _gate(self, art: Any) -> None:
        """Judge the export's engines and precisions on labelled 512x512 slices, as ``liverseg-export
        --validation`` does, so the ``auto`` row runs what ``liverseg-infer`` would choose for it."""
        from liverseg.benchmarks.data import real_slices, synthetic_slices
        from liverseg.export.verify import RealSlices

        n = self.o.gate_slices
        data = real_slices(n, self.o.data_dir) if self.o.real_data else None
        if data is None or not len(data):
            data = synthetic_slices(n, 512, seed=self.o.seed + 2)
        self.log(f"gating the engines and precisions of width {art.ckpt.model_args.get('width')} on {data.source}")
        try:
            art.gate(RealSlices(data.images, list(data.masks), data.source))
        except Exception as e:  # auto then keeps fp32, and the note says why
            self.notes.append(f"engine gates failed, auto runs unjudged files (fp32): {describe(e)}")
            self.log(f"engine gates failed: {describe(e)}\n{traceback.format_exc(limit=5)}")
            return
        self.gates = [{**g, "slices": data.source, "weights": weights_label(art.ckpt)} for g in art.gates]

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
        except Exception as e:  # recorded as the section's one row
            self.scaling_rows = [{"section": "scaling", "error": describe(e)}]
            self.log(f"scaling failed: {describe(e)}\n{traceback.format_exc(limit=5)}")


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
