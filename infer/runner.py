"""Batch inference on ONNX Runtime: streamed, pipelined, resumable.

Pipeline (three stages, memory bounded by the number of images in flight, never by
the number of inputs)::

    decode threads  --(in order, bounded prefetch)-->  batcher + model (main thread)
                    --(bounded)-->  encode/write threads  -->  journal + per_image.csv

* Decoding (PNG inflate) and encoding (deflate) run in thread pools; Pillow and
  onnxruntime release the GIL, so the model does not wait for the disk.
* The batcher groups images of the same size; a group is run when it is full, when
  its oldest image is ``MAX_AGE`` inputs behind (so a rare size never waits for the
  end), or when too many images are pending.
* Every finished input is appended to ``journal.jsonl`` (flushed per row) *after*
  its files were written atomically, so a killed run loses at most the inputs in
  flight, and ``--resume`` knows exactly which outputs are complete.
* ``per_image.csv`` is written in input order through a small reorder buffer and
  renamed into place at the end; ``summary.json`` likewise.

Timing: ``model_images_per_second`` counts only the time inside ``session.run``;
``images_per_second`` is the wall time of the whole pipeline (first decode to last
write) in the same run. ``latency_ms`` per image is its share of its batch's model
time; ``end_to_end_latency_ms`` in the summary is decode start to files written.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.contract import ContractError
from liverseg.core.metrics import SegmentationMetrics, confusion, scores
from liverseg.infer.io import (
    MASK_DIR,
    OVERLAY_DIR,
    PER_IMAGE_COLUMNS,
    PROB_DIR,
    TMP_MARK,
    Item,
    Journal,
    Loaded,
    UsageError,
    atomic_write,
    atomic_write_text,
    csv_line,
    encode_png,
    ignored_files,
    image_size,
    inputs_digest,
    list_inputs,
    load,
    read_journal,
    remove_stale_temporaries,
)
from liverseg.infer.session import DeviceError, ModelSession, find_model, open_session

RUN_STATE = "run.json"
JOURNAL = "journal.jsonl"
PER_IMAGE = "per_image.csv"
SUMMARY = "summary.json"
RUN_FORMAT = "liverseg-infer-run"
MAX_AGE = 64  # a partial same-size group runs once its first image is this many inputs behind
DELAY_ENV = "LIVERSEG_INFER_TEST_DELAY_S"  # tests only: sleep this long before each batch
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Options:
    """Everything ``liverseg-infer`` accepts (see :mod:`liverseg.infer.cli`)."""

    source: Path
    model: Path | None = None
    labels: Path | None = None
    out: Path | None = None
    device: str = "auto"
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
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class RunResult:
    out_dir: Path | None
    summary: dict[str, Any] | None
    exit_code: int
    message: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import onnxruntime
    import PIL

    from liverseg import __version__

    return {
        "liverseg": __version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "Pillow": PIL.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p[0]), 3), "p90": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


def default_runs_dir() -> Path:
    env = os.environ.get("LIVERSEG_RUNS_DIR")
    return Path(env) if env else Path("runs")


def _marked_read_only(runs: Path) -> bool:
    """True when ``runs`` (or the nearest existing folder above it) has no write bit at all.

    Checked on the mode bits, not with ``os.access``: as root every folder is writable,
    and a data folder shipped read-only (``../shared/data``) must still not be written.
    """
    p = runs.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return (p.stat().st_mode & 0o222) == 0
    except OSError:
        return True


def _writable_runs_dir(runs: Path, log: Callable[[str], None]) -> Path:
    try:
        if _marked_read_only(runs):
            raise PermissionError(f"{runs} is read-only")
        runs.mkdir(parents=True, exist_ok=True)
        probe = runs / f".probe{TMP_MARK}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return runs
    except OSError:
        alt = Path.home() / "liverseg-runs"
        log(
            f"note: {runs.absolute()} is not writable (read-only folder); writing the run to {alt} instead (--out chooses)"
        )
        alt.mkdir(parents=True, exist_ok=True)
        return alt


def _new_run_dir(runs: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        d = runs / (f"infer-{stamp}" if k == 1 else f"infer-{stamp}-{k}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise UsageError(f"{runs}: cannot create a new run folder")


def _latest_run_dir(runs: Path) -> Path | None:
    found = [p.parent for p in runs.glob(f"infer-*/{RUN_STATE}")] if runs.is_dir() else []
    return max(found, key=lambda p: (p / RUN_STATE).stat().st_mtime) if found else None


def _row_complete(row: dict[str, Any], out: Path, want: set[str]) -> bool:
    if row.get("status") != "ok":
        return False
    files = row.get("_files") or {}
    if not want <= set(files):
        return False
    for name, size in files.values():
        p = out / name
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


class _OrderedCsv:
    """per_image.csv rows in input order through a reorder buffer (bounded by the images in flight)."""

    def __init__(self, path: Path, n: int) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        self.f = open(self.tmp, "w", encoding="utf-8", newline="")
        self.f.write(",".join(PER_IMAGE_COLUMNS) + "\n")
        self.n = n
        self.next = 0
        self.pending: dict[int, dict[str, Any]] = {}
        self.metrics = SegmentationMetrics()
        self.latency: list[float] = []
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.failed: list[dict[str, str]] = []
        self.n_labelled = 0

    def add(self, row: dict[str, Any]) -> None:
        self.pending[int(row["index"])] = row
        while self.next in self.pending:
            self._write(self.pending.pop(self.next))
            self.next += 1

    def _write(self, row: dict[str, Any]) -> None:
        self.f.write(csv_line(row))
        st = row["status"]
        self.counts[st] = self.counts.get(st, 0) + 1
        if st == "failed" and len(self.failed) < 10000:
            self.failed.append({"input": row["input"], "error": row["error"]})
        if row.get("tp") not in (None, ""):
            self.metrics.add_confusion(row["tp"], row["fp"], row["fn"], row["tn"])
        if st == "ok" and row.get("latency_ms") not in (None, ""):
            self.latency.append(float(row["latency_ms"]))

    def finish(self, make_skipped: Callable[[int], dict[str, Any]]) -> None:
        for i in range(self.next, self.n):
            self.add(self.pending.get(i) or make_skipped(i))
        self.f.flush()
        self.f.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def _base_row(it: Item) -> dict[str, Any]:
    return {
        "index": it.index,
        "input": str(it.image),
        "label": str(it.label) if it.label else "",
        "output": "",
        "status": "failed",
        "error": "",
        "height": "",
        "width": "",
        "latency_ms": "",
        "liver_fraction": "",
    }


def _overlay_fn() -> Callable[..., np.ndarray]:
    from liverseg.core.overlay import overlay_rgb

    return overlay_rgb


class Runner:
    """One invocation of ``liverseg-infer``; :meth:`run` returns a :class:`RunResult`."""

    def __init__(self, opts: Options, log: Callable[[str], None] | None = None) -> None:
        self.o = opts
        self.log = log or (lambda s: print(s, file=sys.stderr))

    # ------------------------------------------------------------ setup

    def _prepare(self) -> None:
        o = self.o
        self.started = _now()
        if o.batch_size is not None and o.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {o.batch_size}")
        if o.limit is not None and o.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {o.limit}")
        self.items = list_inputs(o.source, o.labels, o.data_root, o.limit)
        if not self.items:
            raise UsageError(f"{o.source}: no inputs")
        runs = o.runs_dir or default_runs_dir()
        if o.model is not None:
            model, how = Path(o.model), "--model"
        else:
            model, how = find_model([runs])
            if model is None:
                raise UsageError(f"no model: {how}; pass --model FILE.onnx (export one with liverseg-export)")
        self.log(f"model: {model} ({how})")
        sizes = []
        if o.device != "cpu":
            sizes = [s for s in (image_size(it.image) for it in self.items[:64]) if s]
        self.sess: ModelSession = open_session(
            model,
            device=o.device,
            threads=o.threads,
            spinning=o.spinning,
            contract_path=o.contract,
            sizes=sizes,
            want_probability=o.save_probabilities,
        )
        for n in self.sess.notes:
            self.log(n)
        cuda = self.sess.device.startswith("cuda")
        self.batch_size = o.batch_size or (8 if cuda else 1)
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        auto_workers = min(8, max(2, ncpu // 2)) if cuda else 2
        self.decode_workers = o.decode_workers or auto_workers
        self.write_workers = o.write_workers or auto_workers
        self.overlay = _overlay_fn() if o.overlays else None
        # Output folder.
        if o.out is not None:
            out = Path(o.out)
            out.mkdir(parents=True, exist_ok=True)
        elif o.resume:
            out = _latest_run_dir(runs)
            if out is None:
                raise UsageError(f"--resume without --out: no earlier run under {runs}/infer-*/")
        else:
            out = _new_run_dir(_writable_runs_dir(runs, self.log))
        self.out = out
        self.digest = inputs_digest(self.items)
        state_path = out / RUN_STATE
        if state_path.exists():
            if not o.resume:
                raise UsageError(f"{out} holds an earlier run; pass --resume to finish it, or choose another --out")
            try:
                state = json.loads(state_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UsageError(f"{state_path}: unreadable run state ({e})") from None
            if state.get("inputs_sha256") != self.digest:
                raise UsageError(
                    f"{out}: --resume with a different input list than the run there "
                    f"({state.get('n_inputs')} inputs from {state.get('source')})"
                )
            if state.get("model_sha256") != self.sess.sha256:
                raise UsageError(
                    f"{out}: --resume with a different model (run there used {state.get('model')} "
                    f"sha256 {str(state.get('model_sha256'))[:12]}...)"
                )
        else:
            if o.resume:
                self.log(f"resume: nothing to resume in {out}; starting fresh")
            atomic_write_text(
                state_path,
                json.dumps(
                    {
                        "format": RUN_FORMAT,
                        "inputs_sha256": self.digest,
                        "n_inputs": len(self.items),
                        "source": str(o.source),
                        "labels": str(o.labels) if o.labels else None,
                        "model": str(self.sess.path),
                        "model_sha256": self.sess.sha256,
                        "created": self.started,
                    },
                    indent=2,
                ),
            )
        for d in (MASK_DIR, PROB_DIR if o.save_probabilities else None, OVERLAY_DIR if o.overlays else None):
            if d:
                (out / d).mkdir(exist_ok=True)
        removed = remove_stale_temporaries(out)
        if removed:
            self.log(f"removed {removed} partial file(s) left by an interrupted run")
        # Completed inputs from an earlier (interrupted) run.
        self.want = (
            {"mask"} | ({"probability"} if o.save_probabilities else set()) | ({"overlay"} if o.overlays else set())
        )
        self.done: dict[int, dict[str, Any]] = {}
        if o.resume:
            by_index = {it.index: it for it in self.items}
            for row in read_journal(out / JOURNAL):
                i = int(row["index"])
                if i in by_index and row.get("input") == str(by_index[i].image):
                    if _row_complete(row, out, self.want):
                        self.done[i] = row
                    else:
                        self.done.pop(i, None)
            if self.done:
                self.log(f"resume: {len(self.done)} of {len(self.items)} inputs already complete in {out}")

    # ------------------------------------------------------------ stages

    def _write(self, ld: Loaded, mask: np.ndarray, prob: np.ndarray | None, latency_ms: float) -> dict[str, Any]:
        """Encode and write one input's outputs, then build its row (runs in a write thread)."""
        it = ld.item
        row = _base_row(it)
        h, w = ld.image.shape
        row.update(height=h, width=w, latency_ms=round(latency_ms, 3))
        try:
            pred = mask.astype(bool, copy=False)
            files: dict[str, list[Any]] = {}
            files["mask"] = [it.mask_name, atomic_write(self.out / it.mask_name, encode_png(mask * np.uint8(255)))]
            if prob is not None:
                p16 = np.rint(np.clip(prob, 0.0, 1.0) * 65535.0).astype(np.uint16)
                files["probability"] = [it.prob_name, atomic_write(self.out / it.prob_name, encode_png(p16))]
            if self.overlay is not None:
                rgb = self.overlay(ld.image, pred, ld.truth)
                files["overlay"] = [it.overlay_name, atomic_write(self.out / it.overlay_name, encode_png(rgb))]
        except Exception as e:
            row["error"] = f"{it.image}: writing outputs failed ({type(e).__name__}: {e})"
            return row
        row["output"] = it.mask_name
        row["liver_fraction"] = float(np.count_nonzero(pred)) / pred.size
        row["_files"] = files
        if ld.truth is not None:
            tp, fp, fn, tn = confusion(pred, ld.truth)
            row.update(scores(tp, fp, fn, tn))
            row.update(tp=tp, fp=fp, fn=fn, tn=tn)
        if ld.label_error:
            row["error"] = f"label: {ld.label_error}"
        else:
            row["status"] = "ok"
        row["_e2e_ms"] = round((time.perf_counter() - ld.t0) * 1000.0, 3)
        return row

    def run(self) -> RunResult:
        try:
            self._prepare()
        except (UsageError, ContractError, DeviceError) as e:
            return RunResult(None, None, EXIT_USAGE, str(e))
        o = self.o
        journal = Journal(self.out / JOURNAL)
        csv = _OrderedCsv(self.out / PER_IMAGE, len(self.items))
        for row in self.done.values():
            csv.add(row)
        todo = [it for it in self.items if it.index not in self.done]
        from tqdm import tqdm

        bar = tqdm(
            total=len(self.items),
            initial=len(self.done),
            unit="img",
            desc="liverseg-infer",
            disable=(None if o.progress is None else not o.progress),
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        e2e_ms: list[float] = [float(r["_e2e_ms"]) for r in self.done.values() if r.get("_e2e_ms") is not None]
        stop = False
        model_s = 0.0
        n_model = 0
        bs = self.batch_size
        prefetch = 2 * bs + self.decode_workers + 2
        max_writes = 2 * bs + self.write_workers + 2
        dec = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="liverseg-decode")
        wr = ThreadPoolExecutor(self.write_workers, thread_name_prefix="liverseg-encode")
        decoding: deque[Future] = deque()
        writing: deque[Future] = deque()
        groups: dict[tuple[int, int], list[Loaded]] = {}
        todo_iter = iter(todo)
        interrupted = False

        def emit(row: dict[str, Any]) -> None:
            nonlocal stop
            journal.append(row)
            csv.add(row)
            if row.get("_e2e_ms") is not None:
                e2e_ms.append(float(row["_e2e_ms"]))
            bar.update(1)
            if row["status"] == "failed" and o.fail_fast:
                stop = True

        def harvest(block: bool = False) -> None:
            while writing and (block or writing[0].done()):
                emit(writing.popleft().result())

        def refill() -> None:
            while not stop and len(decoding) < prefetch:
                it = next(todo_iter, None)
                if it is None:
                    return
                decoding.append(dec.submit(load, it))

        def run_group(group: list[Loaded]) -> None:
            nonlocal model_s, n_model
            if delay:
                time.sleep(delay)
            try:
                batch = np.stack([g.image for g in group])[:, None]
                t = time.perf_counter()
                mask, prob = self.sess.run(batch)
                dt = time.perf_counter() - t
            except Exception as e:
                if len(group) > 1:  # isolate the input that breaks the batch
                    for g in group:
                        run_group([g])
                    return
                row = _base_row(group[0].item)
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                row["error"] = f"{group[0].item.image}: model failed ({first})"
                emit(row)
                return
            model_s += dt
            n_model += len(group)
            per = dt * 1000.0 / len(group)
            for k, g in enumerate(group):
                while len(writing) >= max_writes:  # bounded: memory stays flat
                    emit(writing.popleft().result())
                writing.append(wr.submit(self._write, g, mask[k, 0], None if prob is None else prob[k, 0], per))
            harvest()

        t_start = time.perf_counter()
        try:
            refill()
            while (decoding or groups) and not stop:
                if decoding:
                    ld: Loaded = decoding.popleft().result()
                    refill()
                    if ld.error is not None:
                        row = _base_row(ld.item)
                        row["error"] = ld.error
                        emit(row)
                        continue
                    shape = ld.image.shape
                    grp = groups.setdefault(shape, [])
                    grp.append(ld)
                    if len(grp) >= bs:
                        run_group(groups.pop(shape))
                    for s in [s for s, g in groups.items() if ld.item.index - g[0].item.index >= MAX_AGE]:
                        run_group(groups.pop(s))
                    while sum(len(g) for g in groups.values()) > 2 * bs + 2:
                        run_group(groups.pop(next(iter(groups))))
                else:
                    run_group(groups.pop(next(iter(groups))))
                harvest()
            harvest(block=True)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for f in decoding:
                f.cancel()
            dec.shutdown(wait=True, cancel_futures=True)
            try:
                while writing:  # finish what is being written, so the journal knows it
                    emit(writing.popleft().result())
            except KeyboardInterrupt:
                interrupted = True
            wr.shutdown(wait=True)
            bar.close()
        wall = time.perf_counter() - t_start
        if interrupted:
            journal.close()
            csv.abandon()
            return RunResult(
                self.out,
                None,
                EXIT_INTERRUPTED,
                f"interrupted; completed inputs are kept in {self.out / JOURNAL}. Finish with the same "
                f"command plus --resume --out {self.out}",
            )
        journal.close()

        def skipped(i: int) -> dict[str, Any]:
            row = _base_row(self.items[i])
            row.update(status="skipped", error="not run: --fail-fast stopped the run after a failure")
            return row

        csv.finish(skipped)
        summary = self._summary(csv, wall, model_s, n_model, e2e_ms)
        atomic_write_text(self.out / SUMMARY, json.dumps(summary, indent=2, default=str))
        try:
            if o.report:
                from liverseg.infer.report import write_report

                write_report(self.out)
        except Exception as e:  # the report is a convenience; never lose the run over it
            self.log(f"warning: report.html not written ({type(e).__name__}: {e})")
        code = EXIT_OK if summary["n_failed"] == 0 and summary["n_skipped"] == 0 else EXIT_FAILED
        return RunResult(self.out, summary, code)

    # ------------------------------------------------------------ report

    def _summary(
        self, csv: _OrderedCsv, wall: float, model_s: float, n_model: int, e2e_ms: list[float]
    ) -> dict[str, Any]:
        o = self.o
        m = csv.metrics.compute() if len(csv.metrics) else None
        metrics = None
        if m is not None:
            metrics = {
                "n_images": m["n_images"],
                "macro": {k: v for k, v in m.items() if not k.startswith("micro_") and k != "n_images"},
                "micro": {k[len("micro_") :]: v for k, v in m.items() if k.startswith("micro_")},
            }
        ips = n_model / wall if n_model and wall > 0 else 0.0
        mips = n_model / model_s if n_model and model_s > 0 else 0.0
        src = Path(o.source)
        ign = ignored_files(src) if src.is_dir() else (0, [])
        return {
            "n_inputs": len(self.items),
            "n_ok": csv.counts.get("ok", 0),
            "n_failed": csv.counts.get("failed", 0),
            "n_skipped": csv.counts.get("skipped", 0),
            "n_resumed": len(self.done),
            "n_run": n_model,
            "failed": csv.failed,
            "metrics": metrics,
            "mPA": metrics["macro"]["mPA"] if metrics else None,
            "mIoU": metrics["macro"]["mIoU"] if metrics else None,
            "images_per_second": round(ips, 4),
            "model_images_per_second": round(mips, 4),
            "pipeline_efficiency": round(ips / mips, 4) if mips else None,
            "wall_seconds": round(wall, 3),
            "model_seconds": round(model_s, 3),
            "latency_ms": _percentiles(csv.latency),
            "end_to_end_latency_ms": _percentiles(e2e_ms),
            "provider": self.sess.provider,
            "providers": list(self.sess.session.get_providers()),
            "providers_requested": self.sess.providers_requested,
            "device": self.sess.device,
            "device_requested": o.device,
            "device_notes": self.sess.notes,
            "cudnn_conv_algo_search": self.sess.cudnn_conv_algo_search,
            "threads": self.sess.threads,
            "spinning": self.sess.spinning,
            "batch_size": self.batch_size,
            "io_threads": {"decode": self.decode_workers, "encode": self.write_workers},
            "threshold": self.sess.threshold,
            "model": self.sess.info(),
            "inputs": {
                "source": str(o.source),
                "labels": str(o.labels) if o.labels else None,
                "n_with_labels": sum(1 for it in self.items if it.label is not None),
                "ignored_files": ign[0],
                "ignored_examples": ign[1][:20],
                "limit": o.limit,
            },
            "outputs": {
                "masks": MASK_DIR,
                "probabilities": PROB_DIR if o.save_probabilities else None,
                "overlays": OVERLAY_DIR if o.overlays else None,
            },
            "versions": versions(),
            "command": shlex.join(o.command),
            "started": self.started,
            "finished": _now(),
        }


def run_inference(opts: Options, log: Callable[[str], None] | None = None) -> RunResult:
    """Run ``liverseg-infer`` with ``opts``; never raises for bad inputs (see :class:`RunResult`)."""
    return Runner(opts, log).run()


def summary_table(s: dict[str, Any], out_dir: Path) -> str:
    """A few lines for the terminal at the end of a run."""
    lines = [
        f"inputs {s['n_inputs']}: ok {s['n_ok']}, failed {s['n_failed']}, skipped {s['n_skipped']}"
        + (f" (resumed {s['n_resumed']})" if s["n_resumed"] else "")
    ]
    if s["metrics"]:
        ma, mi = s["metrics"]["macro"], s["metrics"]["micro"]
        lines.append(
            f"{'':8s} {'Dice':>7s} {'IoU':>7s} {'mPA':>7s} {'mIoU':>7s} {'prec':>7s} {'recall':>7s}"
            f"   ({s['metrics']['n_images']} labelled)"
        )
        for name, d in (("macro", ma), ("micro", mi)):
            lines.append(
                f"{name:8s} " + " ".join(f"{d[k]:7.4f}" for k in ("dice", "iou", "mPA", "mIoU", "precision", "recall"))
            )
    if s["n_run"]:
        eff = f" ({100 * s['pipeline_efficiency']:.1f}% of model-only)" if s["pipeline_efficiency"] else ""
        lat = s["latency_ms"] or {}
        lines.append(
            f"speed    {s['images_per_second']:.2f} img/s end-to-end, {s['model_images_per_second']:.2f} img/s "
            f"model-only{eff}; model latency p50 {lat.get('p50', float('nan')):.1f} ms, p99 {lat.get('p99', float('nan')):.1f} ms"
        )
    lines.append(f"device   {s['device']} ({s['provider']}), {s['threads']} threads, batch {s['batch_size']}")
    for f in s["failed"][:20]:
        lines.append(f"failed   {f['error']}")
    if len(s["failed"]) > 20:
        lines.append(f"failed   ... and {len(s['failed']) - 20} more (see per_image.csv)")
    lines.append(f"outputs  {out_dir}")
    return "\n".join(lines)
