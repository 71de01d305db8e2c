"""End to end: the ``liverseg-infer`` runner on real 512x512 slices against the model alone.

This is the one end-to-end measurement of the project. For each ONNX Runtime backend
(fp32, int8 QDQ on the CPU; ``ort-cuda-*`` rows run the runner with ``--device cuda``)
and each round, in one process:

* **model only**: the runner's own session (``liverseg.predict.model.open_session``,
  same device, threads and spinning setting) runs the slices in batches of ``batch``
  (1 by default), already decoded in memory, without the decode and encode threads
  beside it; one warm-up batch is run first, then only ``session.run`` is timed.
* **end to end**: :func:`liverseg.infer.runner.run_inference` on the same slice
  folder with its expert masks and the same batch size, timed around the whole
  library call: listing the inputs, opening the model, decoding PNGs, the model,
  encoding and writing masks, per-image metrics, ``per_image.csv``, ``summary.json``
  and ``report.html`` (``report=False`` leaves the last one out).

The two alternate (model-only first in even rounds, end-to-end first in odd ones)
so both see the same machine load, and the rows take turns round by round (every row's
session is opened first), so rows compared with each other saw the same load too.
``e2e_vs_model`` is the median over rounds of (end-to-end rate / model-only rate) of
the same round. The runner's own numbers
(``images_per_second`` from first decode to last write, ``model_images_per_second``
= time inside ``session.run`` in the pipeline, ``pipeline_efficiency`` = their ratio)
and ``fixed_overhead_s`` -- the wall time outside the streamed pipeline: listing the
inputs, opening the session, writing the summary and ``report.html``; a cost per
run, not per image, so it weighs most on small runs of a cheap model -- and its macro
Dice over the labelled slices are recorded beside them; the int8 row's
``dice_delta_vs_fp32`` is judged on all labelled slices, not just the few timed ones.

``repeat`` > 1 lists the slices that many times under different names (hard links, or
copies, in the work folder; the model-only loop runs them as often): a run of a few hundred
slices, where the run's fixed cost weighs as it does on a real batch, not on 78 slices.

Before the first row, one untimed run over two slices makes the imports the runner
makes once per process, so they fall on no row.

OpenVINO rows (``ov-*``) run the runner with ``--engine openvino --precision P``; the
row ``auto`` runs it with its defaults on the fp32 file (``--engine auto --precision
auto``, the combination liverseg.core.choose takes on this machine) and records what
was chosen in ``engine_choice``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.benchmarks.backends import BACKENDS
from liverseg.core.errors import describe

AUTO = "auto"  # the e2e row of liverseg-infer's defaults

E2E_COLUMNS = (
    "section",
    "backend",
    "width",
    "weights",
    "images",
    "repeat",
    "batch",
    "rounds",
    "model_only_images_per_s",
    "e2e_images_per_s",
    "e2e_vs_model",
    "runner_images_per_s",
    "runner_model_images_per_s",
    "runner_pipeline_efficiency",
    "fixed_overhead_s",
    "dice",
    "dice_delta_vs_fp32",
    "n_failed",
    "threads",
    "provider",
    "engine",
    "precision",
    "engine_choice",
    "error",
    "device",
    "spinning",
    "report",
)


@dataclass(frozen=True)
class E2ESettings:
    """How every end-to-end row runs: the slice folder, the runner's settings, where its output goes."""

    folder: Path
    slices: int | None
    threads: int
    batch: int
    spinning: bool
    report: bool
    workdir: Path
    repeat: int = 1


def _weights(art: Any) -> str:
    p = getattr(art.ckpt, "path", None)
    return "random (seeded)" if p is None else f"checkpoint {Path(p).name}"


def _device(name: str) -> str:
    if name == AUTO:
        return "auto"
    return "cuda" if BACKENDS[name].gpu else "cpu"


def _engine_of(name: str) -> tuple[str, str, str]:
    """(engine, precision, artifact) a row runs: ``auto`` is liverseg-infer's defaults on the fp32 file."""
    if name == AUTO:
        return "auto", "auto", "onnx"
    d = BACKENDS[name]
    if d.name.startswith("ov-"):
        return "openvino", str(d.options["precision"]), d.needs
    return "onnxruntime", "fp32" if d.needs == "onnx" else "auto", d.needs


def model_only_rate(sess: Any, batches: list[np.ndarray]) -> float:
    """Images per second of ``session.run`` alone over pre-decoded ``batches`` (only the calls are timed)."""
    t = 0.0
    n = 0
    for x in batches:
        t0 = time.perf_counter()
        sess.run(x)
        t += time.perf_counter() - t0
        n += len(x)
    return n / t


def end_to_end(
    model: Path, device: str, s: E2ESettings, out: Path, n: int, engine: str = "auto", precision: str = "auto"
) -> tuple[float, dict[str, Any]]:
    """(images/s over the wall time of one ``run_inference`` call, its summary with ``_fixed_overhead_s``)."""
    from liverseg.infer.runner import Options, run_inference

    command = ["liverseg-infer", str(s.folder), "--model", str(model), "--device", device, "--batch-size", str(s.batch)]
    command += ["--engine", engine, "--precision", precision]
    opts = Options(
        source=s.folder,
        model=model,
        out=out,
        device=device,
        batch_size=s.batch,
        threads=s.threads,
        spinning=s.spinning,
        progress=False,
        report=s.report,
        limit=s.slices if s.repeat == 1 else None,  # a repeated folder holds only the chosen slices
        command=command,
        engine=engine,
        precision=precision,
    )
    t0 = time.perf_counter()
    res = run_inference(opts, log=lambda _: None)
    wall = time.perf_counter() - t0
    summary = res.summary or {}
    if res.exit_code not in (0, 1) or not summary:
        raise RuntimeError(f"liverseg-infer exited {res.exit_code}: {res.message}")
    shutil.rmtree(out, ignore_errors=True)
    # Time outside the streamed pipeline (listing, opening the model, summary, report.html).
    if summary.get("images_per_second"):
        summary["_fixed_overhead_s"] = wall - summary.get("n_ok", n) / summary["images_per_second"]
    return summary.get("n_ok", n) / wall, summary


def _median(values: list[Any]) -> float:
    return float(np.median([np.nan if v is None else v for v in values]))


def summarise(row: dict[str, Any], model_rates: list[float], e2e_rates: list[float], summaries: list[dict]) -> None:
    """Fill ``row`` from the rounds: medians of the rates and of the runner's own numbers, the last run's Dice."""
    last = summaries[-1]
    row.update(
        rounds=len(e2e_rates),
        model_only_images_per_s=_median(model_rates),
        e2e_images_per_s=_median(e2e_rates),
        e2e_vs_model=_median([e / m for e, m in zip(e2e_rates, model_rates)]),
        runner_images_per_s=_median([s.get("images_per_second") for s in summaries]),
        runner_model_images_per_s=_median([s.get("model_images_per_second") for s in summaries]),
        runner_pipeline_efficiency=last.get("pipeline_efficiency"),
        n_failed=last.get("n_failed"),
        fixed_overhead_s=_median([s.get("_fixed_overhead_s") for s in summaries]),
    )
    row["dice"] = ((last.get("metrics") or {}).get("macro") or {}).get("dice")


class _Backend:
    """One row's session and rounds: model only and end to end, alternating within a round."""

    def __init__(self, art: Any, name: str, row: dict[str, Any], images: list[np.ndarray], s: E2ESettings) -> None:
        self.name, self.row, self.s = name, row, s
        self.device = _device(name)
        self.engine, self.precision, needs = _engine_of(name)
        self.model_rates: list[float] = []
        self.e2e_rates: list[float] = []
        self.summaries: list[dict[str, Any]] = []
        self.n = len(images)
        self.sess: Any = None
        try:
            from liverseg.predict.model import open_session

            self.path = art.path(needs)
            self.sess = open_session(
                self.path,
                device=self.device,
                threads=s.threads,
                spinning=s.spinning,
                engine=self.engine,
                precision=self.precision,
            )
            row["provider"] = self.sess.provider
            row["engine"], row["precision"] = self.sess.engine_name, self.sess.precision
            row["engine_choice"] = f"{self.sess.engine_name} {self.sess.precision}: {self.sess.choice.get('reason')}"
            self.batches = [np.concatenate(images[i : i + s.batch]) for i in range(0, len(images), s.batch)]
            self.sess.run(self.batches[0])  # warm-up (allocations, cuDNN search)
        except Exception as e:  # a file that cannot be made, a device that cannot be used
            self.fail(e)

    @property
    def live(self) -> bool:
        return self.sess is not None and not self.row["error"]

    def fail(self, e: BaseException) -> None:
        self.row["error"] = describe(e)

    def round(self, r: int, log: Callable[[str], None]) -> None:
        """Round ``r``: model only and end to end, their order alternating from round to round."""
        out = self.s.workdir / f"{self.name}-r{r}"
        try:
            if r % 2 == 0:  # alternate, so both see the same machine load
                m = model_only_rate(self.sess, self.batches)
                rate, summary = end_to_end(self.path, self.device, self.s, out, self.n, self.engine, self.precision)
            else:
                rate, summary = end_to_end(self.path, self.device, self.s, out, self.n, self.engine, self.precision)
                m = model_only_rate(self.sess, self.batches)
        except Exception as ex:  # the row records the error; the other backends still run
            self.fail(ex)
            log(f"  e2e {self.name}: {self.row['error']}")
            return
        self.model_rates.append(m)
        self.e2e_rates.append(rate)
        self.summaries.append(summary)
        log(f"  e2e {self.name} round {r + 1}: model only {m:.2f} img/s, end to end {rate:.2f} img/s ({rate / m:.1%})")

    def finish(self) -> None:
        if self.summaries:
            summarise(self.row, self.model_rates, self.e2e_rates, self.summaries)
        self.sess = None


def _warm_up(art: Any, s: E2ESettings, log: Callable[[str], None]) -> None:
    """One untimed run over two slices: the imports the runner makes once per process fall on no row.

    Without it the first row paid them (its first round at 68% of its model-only rate, the
    same engine's later row at 90%, 2026-12-04); a ``liverseg-infer`` command pays them in
    its start-up, which no row times either.
    """
    from liverseg.infer.runner import Options, run_inference

    out = s.workdir / "warm-up"
    try:
        opts = Options(source=s.folder, model=art.path("onnx"), out=out, device="cpu", progress=False, limit=2)
        run_inference(opts, log=lambda _: None)
    except Exception as e:  # the rows say what fails; a warm-up never stops them
        log(f"  e2e warm-up: {describe(e)}")
    shutil.rmtree(out, ignore_errors=True)


def run_e2e(
    art: Any,
    backends: list[str],
    *,
    threads: int,
    slices: int | None = None,
    rounds: int = 2,
    batch: int = 1,
    data_dir: Path | None = None,
    workdir: Path,
    spinning: bool = False,
    report: bool = True,
    repeat: int = 1,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per backend in ``backends`` (names of :data:`~liverseg.benchmarks.backends.BACKENDS`)."""
    from liverseg.benchmarks.data import shared_data_dir
    from liverseg.core.images import discover, read_image

    log = log or (lambda _: None)
    folder = (data_dir or shared_data_dir()) / "chaos-ct-case"
    if not (folder / "images").is_dir():
        return [{"section": "e2e", "error": f"real slices not found at {folder}; end-to-end needs ../shared/data"}]
    samples = discover(folder)[:slices] if slices else discover(folder)
    images = [read_image(smp.image)[None, None] for smp in samples]  # decoded once, for the model-only loop
    if repeat > 1:
        folder = repeated_folder(samples, repeat, Path(workdir) / f"slices-x{repeat}")
        images = images * repeat
    s = E2ESettings(folder, slices, threads, batch, spinning, report, Path(workdir), repeat)
    try:
        return _rows(art, backends, images, s, rounds, log)
    finally:
        if repeat > 1:
            shutil.rmtree(folder, ignore_errors=True)


def _rows(
    art: Any, backends: list[str], images: list[np.ndarray], s: E2ESettings, rounds: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The rows of :func:`run_e2e` on the decoded ``images`` of ``s.folder``."""
    _warm_up(art, s, log)
    rows: list[dict[str, Any]] = []
    runs: list[_Backend] = []
    for name in backends:
        row: dict[str, Any] = {c: None for c in E2E_COLUMNS}
        row.update(
            section="e2e",
            backend=name,
            width=art.ckpt.model_args.get("width"),
            weights=_weights(art),
            images=len(images),
            repeat=s.repeat,
            batch=s.batch,
            threads=s.threads,
            error="",
            device=_device(name) if name in BACKENDS or name == AUTO else None,
            spinning=s.spinning,
            report=s.report,
        )
        rows.append(row)
        if name not in BACKENDS and name != AUTO:
            row["error"] = f"unknown backend {name!r}"
            continue
        run = _Backend(art, name, row, images, s)
        if row["error"]:
            log(f"  e2e {name}: {row['error']}")
        runs.append(run)
    for r in range(rounds):  # round by round across the rows, so every row sees the same machine load
        for run in runs:
            if run.live:
                run.round(r, log)
    for run in runs:
        run.finish()
    _dice_deltas(rows)
    return rows


def repeated_folder(samples: list[Any], repeat: int, folder: Path) -> Path:
    """``folder`` with ``images/`` and ``masks/`` holding each sample ``repeat`` times (``r<k>_<name>``).

    Hard links where the file system allows, copies elsewhere: the runner reads every file as
    it would a distinct slice (no symbolic links, which it resolves).
    """
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for k in range(repeat):
        for smp in samples:
            for sub, src in (("images", smp.image), ("masks", smp.mask)):
                if src is None:
                    continue
                dst = folder / sub / f"r{k}_{Path(src).name}"
                if dst.exists():
                    continue
                try:
                    os.link(src, dst)
                except OSError:  # another file system
                    shutil.copyfile(src, dst)
    return folder


def _dice_deltas(rows: list[dict[str, Any]]) -> None:
    """``dice_delta_vs_fp32`` of every row with a Dice: its Dice minus the ``ort-fp32`` row's, wherever that is."""
    fp32 = next((r["dice"] for r in rows if r.get("backend") == "ort-fp32" and r.get("dice") is not None), None)
    if fp32 is None:
        return
    for row in rows:
        if row.get("backend") != "ort-fp32" and row.get("dice") is not None:
            row["dice_delta_vs_fp32"] = row["dice"] - fp32
