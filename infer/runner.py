"""Batch inference on ONNX Runtime: streamed, pipelined, resumable.

:class:`Runner` is one ``liverseg-infer`` invocation, a short sequence of steps:

1. list the inputs and open the model (:mod:`liverseg.predict.model`);
2. choose the run folder and read its resume state (:mod:`liverseg.infer.resume`):
   ``run.json`` says which inputs and model the folder is for, ``journal.jsonl``
   which inputs are already done;
3. run the rest through decode -> model -> write (:mod:`liverseg.infer.schedule`);
   every finished input is appended to the journal (flushed per row) *after* its
   files were written atomically (:mod:`liverseg.infer.rows`), so a killed run loses
   at most the inputs in flight, and ``--resume`` knows exactly which outputs are complete;
4. every row, in input order, goes to ``per_image.csv`` and to the run report
   (:mod:`liverseg.infer.outcome`), which owns the counts, the metrics, the exit code
   and ``summary.json``; both files are renamed into place at the end, then
   ``report.html`` is written from them.

Timing: ``model_images_per_second`` counts only the time inside ``session.run``;
``images_per_second`` is the wall time of the whole pipeline (first decode to last
write) in the same run. ``latency_ms`` per image is its share of its batch's model
time; ``end_to_end_latency_ms`` in the summary is decode start to files written.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from liverseg.core.choose import ENGINE_CHOICES, PRECISION_CHOICES, gpu_present
from liverseg.core.contract import PROB_NAME, ct_settings
from liverseg.core.engine import check_device
from liverseg.core.errors import ContractError, LiversegError, UsageError, describe
from liverseg.core.extras import install_hint
from liverseg.core.files import DiskFullError, versions, write_text_atomic
from liverseg.core.images import DEFAULT_MAX_PIXELS
from liverseg.core.intensity import INTENSITY_MODES
from liverseg.infer.inputs import (
    MASK_DIR,
    OVERLAY_DIR,
    PROB_DIR,
    Item,
    ignored_files,
    image_size,
    inputs_digest,
    list_inputs,
    load,
)
from liverseg.infer.outcome import RunReport
from liverseg.infer.resume import (
    JOURNAL,
    Journal,
    ResumeState,
    RunIdentity,
    RunLock,
    choose_run_dir,
    refuse_data_folder,
)
from liverseg.infer.rows import OrderedCsv, OutputWriter, failed_row, skipped_row
from liverseg.infer.schedule import Plan, Scheduler
from liverseg.infer.shard import (
    check_part,
    claim_split,
    contract_sha256,
    part_dir,
    refuse_split_folder,
    select_part,
)
from liverseg.infer.volumes import PER_VOLUME, SLICES_DIR, write_volume_tables
from liverseg.predict.model import ModelSession, open_model
from liverseg.predict.predictor import Predictor, Prep
from liverseg.predict.qc import FLAGS, SLICE_FLAGS, flag_codes
from liverseg.reference import default_runs_dir

__all__ = [
    "DELAY_ENV",
    "HOLD_ENV",
    "HOLD_MARK",
    "Options",
    "RunResult",
    "Runner",
    "run_inference",
]

PER_IMAGE = "per_image.csv"
SUMMARY = "summary.json"
DELAY_ENV = "LIVERSEG_INFER_TEST_DELAY_S"  # tests only: sleep this long before each batch
# Tests only: once this many inputs are in the journal, print HOLD_MARK on stderr and wait for a line (or
# the end) on stdin. A test reads stderr up to the mark and then signals, kills or releases the run at a
# point the run itself reported, never after a sleep that races the machine's speed.
HOLD_ENV = "LIVERSEG_INFER_TEST_HOLD_AFTER"
HOLD_MARK = "liverseg test hold:"

Log = Callable[[str], None]
Row = dict[str, Any]


# The closed sets and integer floors of the options; Options checks them, liverseg-infer's click.Choice lists them.
OUTPUT_FORMATS = ("nifti", "nifti+dicom-seg")
_CHOICES = {
    "intensity": INTENSITY_MODES,
    "engine": ENGINE_CHOICES,
    "precision": PRECISION_CHOICES,
    "output_format": OUTPUT_FORMATS,
}
# field -> (least value, None allowed: "choose for me")
_COUNTS = {
    "batch_size": (1, True),
    "threads": (1, True),
    "limit": (1, True),
    "min_blob": (0, False),
    "max_pixels": (1, False),
    "decode_workers": (1, True),
    "write_workers": (1, True),
}
_PYTHON_ONLY = {"decode_workers", "write_workers"}  # counts without a command-line spelling


def _flag(name: str) -> str:
    """How the command line spells the option of field ``name``."""
    return name if name in _PYTHON_ONLY else f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class Options:
    """Everything ``liverseg-infer`` accepts (see :mod:`liverseg.infer.cli`), checked once, when built.

    Every option value and combination is checked here and nowhere else, so the command line and
    ``run_inference(Options(...))`` refuse alike: a :class:`UsageError` naming the option as the
    command line spells it (exit 2 there). Only what needs the opened model (its probability output,
    its contract's window) is left to the Runner.
    """

    source: Path | str  # a path, or a dicomweb+http(s):// URL (liverseg.infer.dicomweb)
    model: str | Path | None = None  # a file, 'latest' or 'reference' (None: the reference model)
    labels: Path | None = None
    out: Path | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # None: 1 on CPU (never faster per slice on 2 cores), 8 on CUDA
    threads: int | None = None
    overlays: bool = False
    save_probabilities: bool = False
    resume: bool = False
    fail_fast: bool = False
    limit: int | None = None
    contract: Path | None = None
    data_root: Path | None = None
    spinning: bool = False
    progress: bool | None = None  # None: only on a terminal
    report: bool = True  # write report.html (liverseg.infer.report) at the end
    decode_workers: int | None = None  # None: 2 on CPU (the model needs the cores), up to 8 on CUDA
    write_workers: int | None = None
    runs_dir: Path | None = None
    spacing: float | None = None  # --spacing: in-plane mm of 2D inputs; overrides a volume's header
    window: tuple[float, float] | None = None  # --window LOW HIGH in HU; default: the contract's
    intensity: str = "auto"  # what stored values are (liverseg.core.intensity)
    allow_gaps: bool = False
    series: str | None = None  # SeriesInstanceUID to read from a DICOM folder holding several
    largest_component: bool = False
    anatomy: bool = True  # volumes: the largest region where a liver can be (liverseg.predict.anatomy)
    allow_non_ct: bool = False  # accept label maps, colour images, MR-like numbers (liverseg.core.ctcheck)
    second_look: bool = True  # volumes: the model on a few flipped slices, for wrong_side and unstable
    fail_on_flags: tuple[str, ...] = ()  # quality flags that fail the input (liverseg.predict.qc); ("any",) for all
    min_blob: int = 0
    output_format: str = "nifti"  # nifti | nifti+dicom-seg (DICOM inputs also get a DICOM-SEG)
    max_pixels: int = DEFAULT_MAX_PIXELS  # images declaring more pixels are refused before decoding
    engine: str = "auto"  # auto | onnxruntime | openvino (liverseg.core.choose)
    precision: str = "auto"  # auto | fp32 | bf16 | int8 | fp16; auto: the fastest that passed its gate
    num_parts: int = 1  # --num-parts/--part-id: run one part of a split run (liverseg.infer.shard)
    part_id: int | None = None
    store: str | None = None  # --store dicomweb+http(s)://HOST/PATH: each DICOM-SEG sent there (STOW-RS)
    store_overlay: bool = False  # --store-overlay: a burned-in overlay series (Secondary Capture) sent too
    command: list[str] = field(default_factory=lambda: list(sys.argv))

    def __post_init__(self) -> None:
        for name, (least, optional) in _COUNTS.items():
            value = getattr(self, name)
            counted = isinstance(value, int) and not isinstance(value, bool) and value >= least
            if not (counted or (value is None and optional)):
                raise UsageError(f"{_flag(name)} must be >= {least}, got {value!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{_flag(name)} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        check_device(self.device)
        check_part(self.num_parts, self.part_id)
        if self.num_parts > 1 and self.out is None:
            raise UsageError("--num-parts needs --out: every part of a split run writes into the same folder")
        if self.window is not None:
            try:
                lo, hi = (float(v) for v in self.window)
            except (TypeError, ValueError):
                raise UsageError(f"--window takes two numbers, LOW HIGH, got {self.window!r}") from None
            if not hi > lo:
                raise UsageError(f"--window: HIGH must be above LOW, got {lo:g} {hi:g}")
            object.__setattr__(self, "window", (lo, hi))  # frozen: set once, here
        if self.spacing is not None and not (isinstance(self.spacing, (int, float)) and 0 < self.spacing <= 10):
            raise UsageError(f"--spacing must be in (0, 10] mm, got {self.spacing!r}")
        known = (*FLAGS, *SLICE_FLAGS, "any")
        unknown = [c for c in self.fail_on_flags if c not in known]
        if unknown:
            raise UsageError(f"--fail-on-flags: unknown flag {', '.join(unknown)}; known: {', '.join(known)}")
        if self.store_overlay and self.store is None:
            raise UsageError("--store-overlay sends the overlay series with the SEG: it needs --store")
        if (self.largest_component or self.min_blob) and importlib.util.find_spec("scipy") is None:
            raise UsageError(
                "--largest-component and --min-blob need scipy, which the 'volumes' extra installs: "
                f"{install_hint('volumes')}"
            )


@dataclass
class RunResult:
    """A run's folder, summary.json content (None when interrupted or refused), exit code and message."""

    out_dir: Path | None
    summary: dict[str, Any] | None
    exit_code: int
    message: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _resume_hint(out: Path, state_dir: Path | None = None) -> str:
    return (
        f"interrupted; completed inputs are kept in {(state_dir or out) / JOURNAL}. Finish with the same "
        f"command plus --resume --out {out}"
    )


class _Finished:
    """Where each finished input's row goes: the journal first, then per_image.csv and the report in input order."""

    def __init__(
        self,
        journal: Journal,
        csv: OrderedCsv,
        report: RunReport,
        bar: Any,
        fail_fast: bool,
        log: Log,
        fail_on_flags: tuple[str, ...] = (),
    ) -> None:
        self.journal, self.csv, self.report, self.bar, self.fail_fast = journal, csv, report, bar, fail_fast
        self.log, self.fail_on_flags = log, fail_on_flags
        self.hold_after = int(os.environ.get(HOLD_ENV, "0") or 0)
        self.n_journaled = 0

    def __call__(self, row: Row) -> bool:
        """Record ``row``; False (stop taking inputs) when it failed under ``--fail-fast``."""
        _fail_on_flags(row, self.fail_on_flags)
        self.journal.append(row)
        self.n_journaled += 1
        if self.n_journaled == self.hold_after:
            print(f"{HOLD_MARK} {self.n_journaled} inputs in the journal", file=sys.stderr, flush=True)
            if sys.stdin is not None:
                sys.stdin.readline()  # a signal interrupts it (exit 130) as it would the model
        if row["status"] == "failed":  # said as it happens, on stderr (a DICOM folder of several series: --series)
            self.log(f"failed: {row['error']}")
        if row.get("notes"):  # a volume's assumptions are said as well as recorded
            self.log(f"note: {row['input']}: {row['notes']}")
        if row.get("qc_flags"):  # one line per flagged input (liverseg.predict.qc)
            self.log(f"qc: {row['input']}: {row['qc_flags']}")
        for r in self.csv.add(row):
            self.report.add(r)
        self.bar.update(1)
        return not (self.fail_fast and row["status"] == "failed")


def _fail_on_flags(row: Row, fail_on: tuple[str, ...]) -> None:
    """``--fail-on-flags``: an ``ok`` row raising one of ``fail_on`` (``any``: any flag) becomes a failure. Its
    outputs stay written, for a look; ``--resume`` runs it again."""
    if row.get("status") != "ok" or not fail_on:
        return
    flags = flag_codes(row.get("qc_flags"))
    hit = flags if "any" in fail_on else [f for f in flags if f in fail_on]
    if hit:
        row["status"] = "failed"
        row["error"] = f"{row['input']}: quality flags {', '.join(hit)} (--fail-on-flags; the outputs are written)"


class Runner:
    """One invocation of ``liverseg-infer``; :meth:`run` returns a :class:`RunResult`."""

    def __init__(self, opts: Options, log: Log | None = None) -> None:
        self.o = opts
        self.log: Log = log or (lambda s: print(s, file=sys.stderr))
        self.runs = opts.runs_dir or default_runs_dir()
        self.prep = Prep()
        self._has_volumes = False
        self._locks: list[RunLock] = []
        self.all_items: list[Item] = []  # the whole run's inputs; a split run's part runs some of them
        self.part = 0

    def run(self) -> RunResult:
        """Run the inference; raises a :class:`~liverseg.core.errors.LiversegError` before any work when it cannot.

        The exit code is the report's: 0 all inputs done, 1 some failed or skipped,
        130 interrupted (then ``summary`` is None and ``message`` says how to resume).
        """
        started = _now()
        items = self._inputs()
        sess = self._open_model(items)
        self.prep = self._prep(sess)
        plan = self._plan(sess)
        try:
            return self._run(items, sess, plan, started)
        finally:
            for lock in reversed(self._locks):
                lock.release()

    def _run(self, items: list[Item], sess: ModelSession, plan: Plan, started: str) -> RunResult:
        state = self._open_run_folder(items, sess, started)
        report = RunReport(len(items), n_resumed=len(state.done))
        by_index = {it.index: it for it in items}
        csv = OrderedCsv(state.state_dir / PER_IMAGE, len(items), list(by_index))
        for row in csv.add_all(state.done.values()):
            report.add(row)
        scheduler = self._schedule(items, plan, sess, state, csv, report)
        if scheduler.disk_full is not None and not report.interrupted:
            self._stop_disk_full(scheduler, items, sess, plan, started, state.state_dir, csv, report)
        if report.interrupted:
            csv.abandon()
            return RunResult(state.out, None, report.return_code, _resume_hint(state.out, state.state_dir))
        report.timed(scheduler.wall_seconds, scheduler.model_seconds, scheduler.n_model)
        for row in csv.finish(lambda i: skipped_row(by_index[i])):
            report.add(row)
        summary = report.summary(self._about(items, sess, plan, started))
        if report.volume_rows:
            write_volume_tables(state.state_dir, report.volume_rows)
        write_text_atomic(state.state_dir / SUMMARY, json.dumps(summary, indent=2, default=str))
        if self.o.num_parts == 1:  # a part's rows are a share: liverseg-merge writes the report
            self._write_report_html(state.out)
        return RunResult(state.out, summary, report.return_code)

    def _stop_disk_full(
        self,
        scheduler: Scheduler,
        items: list[Item],
        sess: ModelSession,
        plan: Plan,
        started: str,
        out: Path,
        csv: OrderedCsv,
        report: RunReport,
    ) -> None:
        """The disk filled up: keep what was done, write the completed part's tables if they fit, raise (exit 3)."""
        err = scheduler.disk_full
        report.timed(scheduler.wall_seconds, scheduler.model_seconds, scheduler.n_model)
        try:
            by_index = {it.index: it for it in items}
            why = "the disk filled up first (finish with --resume)"
            for row in csv.finish(lambda i: skipped_row(by_index[i], why)):
                report.add(row)
            summary = report.summary(self._about(items, sess, plan, started))
            summary["stopped"] = f"disk full: {err}"
            write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2, default=str))
            kept = "per_image.csv and summary.json of the completed part are written"
        except OSError:  # DiskFullError included: no room even for the tables
            csv.abandon()
            kept = "no room was left for per_image.csv and summary.json"
        raise DiskFullError(
            f"no space left on the device: {err}; the {report.counts['ok']} inputs done are kept in {out} ({kept}). "
            f"Free some space and finish with the same command plus --resume --out {out}"
        )

    def _schedule(
        self, items: list[Item], plan: Plan, sess: ModelSession, state: ResumeState, csv: OrderedCsv, report: RunReport
    ) -> Scheduler:
        """Run the inputs not done yet; every finished row goes to the journal, per_image.csv and the report."""
        todo = [it for it in items if it.index not in state.done]
        store = None
        if self.o.store is not None:  # UIDs of this run's SEGs: the same on --resume (never stored twice)
            from liverseg.infer.dicomweb import Store, run_token

            store = Store(self.o.store, run_token(state.state_dir), overlay=self.o.store_overlay)
            self.log(store.describe())
        journal = state.journal()
        bar = self._progress_bar(len(items), len(state.done))
        finished = _Finished(journal, csv, report, bar, self.o.fail_fast, self.log, self.o.fail_on_flags)
        predictor = Predictor(
            sess,
            self.prep,
            plan.batch_size,
            second_look=self.o.second_look,
            keep_probability=self.o.save_probabilities,
        )
        writer = OutputWriter(
            state.out,
            self.o.overlays,
            predictor,
            versions().get("liverseg", ""),
            volume_overlays=self.o.overlays or self.o.report,
            store=store,
        )
        scheduler = Scheduler(
            plan,
            predictor,
            writer,
            failed_row,
            finished,
            load=functools.partial(load, prep=self.prep),
            early=writer.volumes.early,
        )
        try:
            report.interrupted = scheduler.run(todo)
        finally:
            bar.close()
            try:
                journal.close()
            except OSError as e:  # its last fsync on a full disk
                scheduler.disk_full = scheduler.disk_full or DiskFullError(f"{journal.path}: {e.strerror}")
        return scheduler

    # ------------------------------------------------------------ setup

    def _inputs(self) -> list[Item]:
        o = self.o  # its values were checked when it was built (Options.__post_init__)
        # this run's --out and the default runs folder, when inside a folder input, are not inputs
        exclude = [p for p in (o.out, self.runs) if p is not None]
        items = list_inputs(o.source, o.labels, o.data_root, o.limit, exclude=exclude, series=o.series)
        if not items:
            raise UsageError(f"{o.source}: no inputs")
        self._has_volumes = any(it.is_volume for it in items)
        urls = [it.image for it in items if it.kind == "dicomweb"]
        if urls:
            from liverseg.infer.dicomweb import describe_inputs

            self.log(f"{describe_inputs(urls)}: {len(urls)} input(s)")
        self.all_items = items
        self.part = o.part_id or 0
        if o.num_parts > 1:
            items = select_part(items, o.num_parts, self.part)
            self.log(f"part {self.part} of {o.num_parts}: {len(items)} of {len(self.all_items)} inputs")
        return items

    def _open_model(self, items: list[Item]) -> ModelSession:
        """``--model`` (a path, ``latest`` or ``reference``), else the shipped reference model; said in the log."""
        o = self.o
        sizes = []
        if o.device != "cpu" and gpu_present():  # the cuDNN algorithm search depends on how many sizes there are
            sizes = [s for s in (image_size(it.image) for it in items[:64]) if s]
        device, _, index = o.device.partition(":")  # cuda:N: GPU N
        return open_model(
            o.model,
            [self.runs],
            self.log,
            device=device,
            device_id=int(index or 0),
            threads=o.threads,
            spinning=o.spinning,
            contract_path=o.contract,
            sizes=sizes,
            require_probability=o.save_probabilities,  # resampling's need is known once the contract is read (_prep)
            engine=o.engine,
            precision=o.precision,
        )

    def _prep(self, sess: ModelSession) -> Prep:
        """How inputs become model input: the contract's HU window and pixel spacing, then the options."""
        o = self.o
        window, model_spacing = ct_settings(sess.contract)
        if o.window is not None:  # --window wins over the contract's
            window = o.window
        if model_spacing is None and o.spacing is not None:
            self.log("note: the model records no training pixel spacing; --spacing is recorded, nothing is resampled")
        prep = Prep(
            window=window,
            model_spacing=model_spacing,
            spacing=o.spacing,
            intensity=o.intensity,
            allow_gaps=o.allow_gaps,
            series=o.series,
            largest_component=o.largest_component,
            anatomy=o.anatomy,
            allow_non_ct=o.allow_non_ct,
            min_blob=o.min_blob,
            dicom_seg="dicom-seg" in o.output_format or o.store is not None,
            save_probabilities=o.save_probabilities,
            max_pixels=o.max_pixels,
        )
        # Probabilities come back only when needed (_schedule): saved, or resized back from the model's spacing.
        if (o.save_probabilities or prep.resamples) and PROB_NAME not in sess.output_names:
            raise ContractError(
                f"{sess.path}: has no {PROB_NAME!r} output (only {sess.output_names}), which resampling inputs to "
                f"the model's {prep.model_spacing} mm pixels and back needs; export the model with liverseg-export"
            )
        return prep

    def _plan(self, sess: ModelSession) -> Plan:
        o = self.o
        cuda = sess.device.startswith("cuda")
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        auto_workers = min(8, max(2, ncpu // 2)) if cuda else 2
        return Plan(
            batch_size=o.batch_size or (8 if cuda else 1),
            decode_workers=o.decode_workers or auto_workers,
            write_workers=o.write_workers or auto_workers,
            delay_s=float(os.environ.get(DELAY_ENV, "0") or 0),
        )

    def _open_run_folder(self, items: list[Item], sess: ModelSession, started: str) -> ResumeState:
        """Choose and lock the run folder, create its output folders, and check or start its resume state."""
        o = self.o
        if o.out is not None:
            refuse_data_folder(Path(o.out), Path(o.source), items)
        out = choose_run_dir(o.out, o.resume, self.runs, self.log)
        command = shlex.join(o.command)
        state_dir = None
        if o.num_parts > 1:  # the folder shared with the other parts, the part's own folder alone
            self._locks.append(RunLock(out, command, shared=True))
            state_dir = part_dir(out, self.part, o.num_parts)
            state_dir.mkdir(parents=True, exist_ok=True)
            self._locks.append(RunLock(state_dir, command))
            claim_split(out, self._split_record(sess))
        else:
            self._locks.append(RunLock(out, command))  # before anything in the folder is touched
            refuse_split_folder(out)
        self._make_output_folders(out)
        identity = self._identity(items, sess, started)
        return ResumeState.open(
            out, identity, items, self._wanted(), resume=o.resume, log=self.log, state_dir=state_dir
        )

    def _split_record(self, sess: ModelSession) -> dict[str, Any]:
        """What every part of a split run must share (``split.json``, :mod:`liverseg.infer.shard`)."""
        o = self.o
        return {
            "num_parts": o.num_parts,
            "inputs_sha256": inputs_digest(self.all_items),
            "n_inputs": len(self.all_items),
            "source": str(o.source),
            "model": str(sess.path),
            "model_sha256": sess.sha256,
            "contract_sha256": contract_sha256(sess.contract),
            "settings": {
                "window_hu": list(self.prep.window),
                "spacing_mm": o.spacing,
                "intensity": o.intensity,
                "allow_gaps": o.allow_gaps,
                "series": o.series,
                "largest_component": o.largest_component,
                "anatomy": o.anatomy,
                "allow_non_ct": o.allow_non_ct,
                "second_look": o.second_look,
                "fail_on_flags": list(o.fail_on_flags),
                "min_blob": o.min_blob,
                "output_format": o.output_format,
                "store": o.store,
                "store_overlay": o.store_overlay,
                "max_pixels": o.max_pixels,
                "overlays": o.overlays,
                "save_probabilities": o.save_probabilities,
                "report": o.report,
            },
        }

    def _wanted(self) -> set[str]:
        """The kinds of file every input must have for ``--resume`` to count it as done."""
        o = self.o
        return {"mask"} | ({"probability"} if o.save_probabilities else set()) | ({"overlay"} if o.overlays else set())

    def _make_output_folders(self, out: Path) -> None:
        for d in (
            MASK_DIR,
            PROB_DIR if self.o.save_probabilities else None,
            OVERLAY_DIR if self.o.overlays or (self.o.report and self._has_volumes) else None,
            SLICES_DIR if self._has_volumes else None,
        ):
            if d:
                (out / d).mkdir(exist_ok=True)

    def _identity(self, items: list[Item], sess: ModelSession, started: str) -> RunIdentity:
        o = self.o
        return RunIdentity(
            inputs_sha256=inputs_digest(items),
            n_inputs=len(items),
            source=str(o.source),
            labels=str(o.labels) if o.labels else None,
            model=str(sess.path),
            model_sha256=sess.sha256,
            created=started,
            part=None if o.num_parts == 1 else {"id": self.part, "num_parts": o.num_parts},
        )

    def _progress_bar(self, total: int, initial: int) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            unit="img",
            desc="liverseg-infer",
            disable=(None if self.o.progress is None else not self.o.progress),
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    # ------------------------------------------------------------ report

    def _about(self, items: list[Item], sess: ModelSession, plan: Plan, started: str) -> dict[str, Any]:
        """summary.json's description of the run: engine, device, threads, model, inputs, outputs, versions."""
        o = self.o
        src = Path(o.source)
        outs = [p for p in (o.out, self.runs) if p is not None]
        n_ignored, ignored = ignored_files(src, self.all_items, outs) if src.is_dir() else (0, [])
        part = {"part": {"id": self.part, "num_parts": o.num_parts, "n_inputs": len(items)}} if o.num_parts > 1 else {}
        return {
            "provider": sess.provider,
            "engine": sess.engine_name,
            "precision": sess.precision,
            "engine_choice": sess.choice,
            "providers": sess.providers,
            "providers_requested": sess.providers_requested,
            "device": sess.device,
            "device_requested": o.device,
            "device_notes": sess.notes,
            "cudnn_conv_algo_search": sess.cudnn_conv_algo_search,
            "threads": sess.threads,
            "spinning": sess.spinning,
            "batch_size": plan.batch_size,
            "io_threads": {"decode": plan.decode_workers, "encode": plan.write_workers},
            "threshold": sess.threshold,
            "preprocessing": {
                "window_hu": list(self.prep.window),
                "window_from": "--window" if o.window is not None else "the model's contract",
                "model_pixel_spacing_mm": self.prep.model_spacing,
                "spacing_mm": o.spacing,
                "intensity": o.intensity,
                "resampling": (
                    "none: the model records no training pixel spacing"
                    if self.prep.model_spacing is None
                    else f"slices resized to {self.prep.model_spacing:g} mm pixels and back"
                    + (
                        ""
                        if o.spacing is not None
                        else "; 2D inputs have no spacing (pass --spacing): used as they are"
                    )
                ),
            },
            "postprocessing": {
                "largest_component": o.largest_component,
                "anatomy": o.anatomy,
                "min_blob_voxels": o.min_blob,
                "second_look": o.second_look,
            },
            "model": sess.info(),
            "inputs": {
                "source": str(o.source),
                "labels": str(o.labels) if o.labels else None,
                "n_with_labels": sum(1 for it in self.all_items if it.label is not None),
                "ignored_files": n_ignored,
                "ignored_examples": ignored[:20],
                "limit": o.limit,
            },
            "outputs": {
                "masks": MASK_DIR,
                "probabilities": PROB_DIR if o.save_probabilities else None,
                "overlays": OVERLAY_DIR if o.overlays else None,
                "volumes": PER_VOLUME if self._has_volumes else None,
                "dicom_seg": self.prep.dicom_seg,
                "stored_to": self.o.store,
                "stored_overlay": self.o.store_overlay,
            },
            "versions": versions(),
            "command": shlex.join(o.command),
            "started": started,
            "finished": _now(),
            **part,
        }

    def _write_report_html(self, out: Path) -> None:
        if not self.o.report:
            return
        try:
            from liverseg.infer.report import write_report

            write_report(out)
        except Exception as e:  # the report is a convenience; never lose the run over it
            self.log(f"warning: report.html not written ({describe(e)})")


def run_inference(opts: Options, log: Log | None = None) -> RunResult:
    """Run ``liverseg-infer`` with ``opts``; never raises for bad inputs.

    A bad option value was refused already, when ``opts`` was built (:class:`Options`
    raises the :class:`~liverseg.core.errors.UsageError`). A usage-type error found on
    the way (a :class:`~liverseg.core.errors.LiversegError`: input list, model,
    contract or device) comes back as its exit code (2; 3 for a full disk) with the
    message; the command line lets it reach :class:`liverseg.core.cli.Command` instead.
    """
    try:
        return Runner(opts, log).run()
    except LiversegError as e:
        return RunResult(None, None, e.exit_code, str(e))
