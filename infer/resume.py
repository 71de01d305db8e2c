"""Resume state of an inference run folder: which folder, ``run.json``, ``journal.jsonl``, what is done.

A run folder holds

* ``run.json`` -- what the run is (:class:`RunIdentity`: the digest of the input list
  and of the model). ``--resume`` refuses a folder whose run.json names other inputs or
  another model; without ``--resume`` a folder that holds a run is never reused.
* ``journal.jsonl`` -- one JSON line per finished input, appended (and flushed) only
  after the input's files were renamed into place. A SIGKILL can cut only the last
  line short; :func:`read_journal` ignores such a line.

An input counts as done on ``--resume`` when its last journal row is ``ok``, names
the same input file, the input (and its label) still has the size and modification
time recorded when it was read, and every file the run wants (mask, and probability
map or overlay when asked for) is there with the size the journal recorded. Anything
else is run again.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from liverseg.core.errors import UsageError
from liverseg.core.files import DiskFullError, ensure_writable_dir, remove_stale_temporaries, write_text_atomic
from liverseg.infer.inputs import MASK_DIR, OVERLAY_DIR, PROB_DIR, RUN_FORMAT, RUN_STATE, Item, input_stat

JOURNAL = "journal.jsonl"

Row = dict[str, Any]
Log = Callable[[str], None]


# ---------------------------------------------------------------- which run folder


def _marked_read_only(runs: Path) -> bool:
    """True when ``runs`` (or the nearest existing folder above it) has no write bit at all.

    Checked on the mode bits, not with ``os.access``: as root every folder is writable,
    and a data folder shipped read-only must still not be written.
    """
    p = runs.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return (p.stat().st_mode & 0o222) == 0
    except OSError:
        return True


def _writable_runs_dir(runs: Path, log: Log) -> Path:
    """``runs`` when it can be written, else ``~/liverseg-runs`` (said in the log)."""
    try:
        if _marked_read_only(runs):
            raise PermissionError(f"{runs} is read-only")
        return ensure_writable_dir(runs, UsageError)
    except (OSError, UsageError):
        alt = Path.home() / "liverseg-runs"
        log(
            f"note: {runs.absolute()} is not writable (read-only folder); writing the run to {alt} instead "
            "(--out chooses)"
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


def latest_run_dir(runs: Path) -> Path | None:
    """The ``runs/infer-*`` folder whose run.json changed last, or None."""
    found = [p.parent for p in runs.glob(f"infer-*/{RUN_STATE}")] if runs.is_dir() else []
    return max(found, key=lambda p: (p / RUN_STATE).stat().st_mtime) if found else None


def choose_run_dir(out: Path | None, resume: bool, runs: Path, log: Log) -> Path:
    """``--out`` (created); with ``--resume`` alone the newest run under ``runs``; else a new ``runs/infer-<time>``."""
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    if resume:
        latest = latest_run_dir(runs)
        if latest is None:
            raise UsageError(f"--resume without --out: no earlier run under {runs}/infer-*/")
        return latest
    return _new_run_dir(_writable_runs_dir(runs, log))


def refuse_data_folder(out: Path, source: Path, items: list[Item]) -> None:
    """Refuse an ``--out`` that would write into the data: the input folder, or a folder of inputs or labels.

    Masks written there would mix with the data (``--out`` equal to a dataset folder
    put predictions into its ``masks/``); a subfolder of the input folder is fine, since
    a run folder is never listed as input.
    """
    o = os.path.realpath(out)
    if source.is_dir() and o == os.path.realpath(source):
        raise UsageError(f"--out {out} is the input folder; choose a folder outside it or a new subfolder of it")
    data: dict[str, str] = {}
    for it in items:
        data.setdefault(os.path.realpath(it.image if os.path.isdir(it.image) else os.path.dirname(it.image)), "inputs")
        if it.label:
            data.setdefault(os.path.realpath(os.path.dirname(it.label)), "labels")
    for d in (o, *(os.path.join(o, sub) for sub in (MASK_DIR, PROB_DIR, OVERLAY_DIR))):
        what = data.get(os.path.realpath(d))
        if what:
            raise UsageError(
                f"--out {out} would write into {d}, which holds the run's {what}; choose another --out "
                "(predictions must never mix with the data)"
            )


# ---------------------------------------------------------------- the lock


LOCK_NAME = ".liverseg-run.lock"


class RunLock:
    """An exclusive lock on a run folder for the length of a run (``flock`` on ``.liverseg-run.lock``).

    A second run, or a ``--resume``, on a folder in use is refused with the holder's
    process id, host, start time and command (read from the lock file). The kernel
    releases the lock when its process ends, however it ends, so a lock left by a killed
    run never blocks ``--resume``: the file stays, the lock does not.

    ``shared=True`` takes a shared lock instead: the parts of a split run
    (:mod:`liverseg.infer.shard`) hold the folder together, each with its own part
    folder locked exclusively, so a whole run (or ``liverseg-merge``) is refused while
    any part runs, and a part while a whole run does. A shared holder writes nothing
    into the file (there may be many); ``busy`` words the refusal.
    """

    def __init__(self, out: Path, command: str, *, shared: bool = False, busy: str = "") -> None:
        import fcntl
        import socket

        self.path = out / LOCK_NAME
        self.shared = shared
        self._f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._f.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            self._f.seek(0)
            holder = self._f.read().strip()
            self._f.close()
            try:
                info = json.loads(holder)
                who = (
                    f"process {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                    f"{info.get('command')}"
                )
            except ValueError:
                who = "parts of a split run, or another process"
            raise UsageError(
                busy
                or f"{out} is in use by another liverseg-infer run ({who}); wait for it to end or choose another --out"
            ) from None
        if shared:
            return
        self._f.seek(0)
        self._f.truncate()
        self._f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now().isoformat("T", "seconds"),
                    "command": command,
                }
            )
            + "\n"
        )
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            if not self.shared:  # a later refusal must not name a holder that is gone
                self._f.truncate(0)
            self._f.close()  # closing the descriptor releases the flock


# ---------------------------------------------------------------- run.json


@dataclass(frozen=True)
class RunIdentity:
    """What ``run.json`` records: a resumed run must have the same input list and model."""

    inputs_sha256: str
    n_inputs: int
    source: str
    labels: str | None
    model: str
    model_sha256: str
    created: str
    part: dict[str, Any] | None = None  # a split run's part (liverseg.infer.shard): its place and indices

    def to_json(self) -> str:
        return json.dumps({"format": RUN_FORMAT, **asdict(self)}, indent=2)

    def check_resumable(self, out: Path, state: dict[str, Any]) -> None:
        """Raise :class:`UsageError` when the earlier run in ``out`` (its run.json ``state``) is another run."""
        if state.get("inputs_sha256") != self.inputs_sha256:
            raise UsageError(
                f"{out}: --resume with a different input list than the run there "
                f"({state.get('n_inputs')} inputs from {state.get('source')})"
            )
        if state.get("model_sha256") != self.model_sha256:
            raise UsageError(
                f"{out}: --resume with a different model (run there used {state.get('model')} "
                f"sha256 {str(state.get('model_sha256'))[:12]}...)"
            )


# ---------------------------------------------------------------- journal.jsonl


class Journal:
    """Append-only JSON-lines record of finished inputs, flushed per row and fsync'ed on close.

    A SIGKILL can cut only the last line short; :func:`read_journal` ignores such a
    line, so every row that was flushed survives and nothing else is believed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        cut = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
        self._f = open(path, "a", encoding="utf-8")
        if cut:  # a kill cut the last line short: end it, so the next row starts on a line of its own
            self._f.write("\n")

    def append(self, row: Row) -> None:
        try:
            self._f.write(json.dumps(row, separators=(",", ":")) + "\n")
            self._f.flush()
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{self.path}: no space left on the device ({e.strerror})") from None
            raise

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


def read_journal(path: Path) -> Iterator[Row]:
    """The complete rows of a journal, in the order they were written (a line cut short ends it)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut short by a kill
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "index" in row:
                yield row


def _row_complete(row: Row, out: Path, want: set[str]) -> bool:
    """An ``ok`` row whose wanted files are all there with the sizes the journal recorded."""
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


def completed_rows(journal: Path, items: Iterable[Item], out: Path, want: set[str]) -> dict[int, Row]:
    """Input index -> journal row, for the inputs whose outputs are complete (rule in the module docstring)."""
    by_index = {it.index: it for it in items}
    done: dict[int, Row] = {}
    for row in read_journal(journal):
        i = int(row["index"])
        if i in by_index and row.get("input") == str(by_index[i].image):
            if _row_complete(row, out, want):
                done[i] = row
            else:  # a later row for the same input wins: it was run again and did not finish
                done.pop(i, None)
    # an input (or its label) replaced or edited since its row was written is run again
    for i in [i for i, row in done.items() if row.get("_stat") != input_stat(by_index[i])]:
        del done[i]
    return done


# ---------------------------------------------------------------- the whole state


class ResumeState:
    """One run folder's resume state: its run.json, its journal, and the inputs already done.

    ``out`` holds the outputs (masks, ...); ``state_dir`` the run's own files (run.json,
    the journal, per_image.csv, summary.json): ``out`` itself for a whole run, the
    part's folder for a part of a split run (:mod:`liverseg.infer.shard`).
    """

    def __init__(self, out: Path, done: dict[int, Row], state_dir: Path | None = None) -> None:
        self.out = out
        self.done = done
        self.state_dir = state_dir or out

    @classmethod
    def open(
        cls,
        out: Path,
        identity: RunIdentity,
        items: list[Item],
        want: set[str],
        *,
        resume: bool,
        log: Log,
        state_dir: Path | None = None,
    ) -> ResumeState:
        """Check (``--resume``) or write run.json, remove a killed run's partial files, read what is done.

        Raises :class:`UsageError` for a folder that holds another run, or an earlier
        run without ``--resume``. A part (``state_dir`` given) removes partial files in
        its own folder only: the shared output folders may hold other parts' files in
        flight (``liverseg-merge``, which runs alone, clears them).
        """
        state_dir = state_dir or out
        state_path = state_dir / RUN_STATE
        if state_path.exists():
            if not resume:
                raise UsageError(f"{out} holds an earlier run; pass --resume to finish it, or choose another --out")
            try:
                state = json.loads(state_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UsageError(f"{state_path}: unreadable run state ({e})") from None
            identity.check_resumable(out, state)
        else:
            if resume:
                log(f"resume: nothing to resume in {out}; starting fresh")
            write_text_atomic(state_path, identity.to_json())
        shared = [] if state_dir != out else [out, out / MASK_DIR, out / PROB_DIR, out / OVERLAY_DIR]
        removed = remove_stale_temporaries([state_dir, *shared])
        if removed:
            log(f"removed {removed} partial file(s) left by an interrupted run")
        done = completed_rows(state_dir / JOURNAL, items, out, want) if resume else {}
        if done:
            log(f"resume: {len(done)} of {len(items)} inputs already complete in {state_dir}")
        return cls(out, done, state_dir)

    def journal(self) -> Journal:
        """The journal, opened for appending this run's rows."""
        return Journal(self.state_dir / JOURNAL)
