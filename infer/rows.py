"""One input's row of per_image.csv, the files behind it, and per_image.csv itself in input order.

* :class:`OutputWriter` encodes and writes one input's mask (and probability map and
  overlay when asked for), then builds its row with the metrics against the label.
* :func:`failed_row` / :func:`skipped_row` are the rows of inputs without outputs.
* :class:`OrderedCsv` writes rows in input order whatever order they finish in.

A row is a dict over :data:`~liverseg.infer.inputs.PER_IMAGE_COLUMNS`, plus two keys for
the journal only: ``_files`` (kind -> [name, size], what ``--resume`` checks) and
``_e2e_ms`` (decode start to files written).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverseg.core.errors import describe
from liverseg.core.files import TMP_MARK, DiskFullError, write_bytes_atomic
from liverseg.core.intensity import WINDOW_ESTIMATED
from liverseg.core.metrics import confusion, scores
from liverseg.core.overlay import overlay_rgb
from liverseg.core.png import encode_mask_png, encode_png
from liverseg.infer.inputs import PER_IMAGE_COLUMNS, Item, Loaded, csv_line
from liverseg.infer.volumes import VolumeWriter

if TYPE_CHECKING:
    from liverseg.predict.predictor import Predictor

Row = dict[str, Any]

# Per-image files are written without fsync. Measured on a 2-core Intel Xeon (ext4 on a
# virtual disk): 1,000 512x512 masks (2.5 kB PNG each) through write_bytes_atomic took
# 0.26 ms each without fsync and 0.53 ms with it; a whole CPU run of 1,000 64x64 inputs
# with overlays (two files each, a width-4 U-Net) took 1.9-2.0 s without and 2.35-2.55 s
# with it, about 20% fewer images per second. It buys nothing --resume needs: the rename
# leaves whole files or none after a kill, and after a power loss a file whose size no
# longer matches its journal row is written again. summary.json, per_image.csv and
# run.json are fsync'ed.
FSYNC_PER_IMAGE = False


def _base_row(it: Item) -> Row:
    volume = {"kind": it.kind} if it.is_volume else {}
    return {
        **volume,
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


def failed_row(it: Item, error: str) -> Row:
    """The row of an input that gave no output (it could not be decoded, or the model failed on it)."""
    row = _base_row(it)
    row["error"] = error
    return row


def skipped_row(it: Item, why: str = "--fail-fast stopped the run after a failure") -> Row:
    """The row of an input that the run left unrun (``--fail-fast``, a full disk)."""
    row = _base_row(it)
    row.update(status="skipped", error=f"not run: {why}")
    return row


class OutputWriter:
    """Writes one input's files into the run folder and returns its row (called from the write threads).

    A 2D slice is brought back to its own grid and cleaned up by the predictor
    (:meth:`liverseg.predict.predictor.Predictor.finish_slice`); volumes go to
    :class:`liverseg.infer.volumes.VolumeWriter`.
    """

    def __init__(
        self,
        out: Path,
        overlays: bool,
        predictor: Predictor,
        software_version: str = "",
        volume_overlays: bool | None = None,
        store: Any = None,
    ) -> None:
        self.out = out
        self.predictor = predictor
        self.prep = predictor.prep
        # a volume's few overlays (3 axial, 1 coronal) are drawn for the report too: it cannot read volumes again
        self.volumes = VolumeWriter(
            out, predictor, overlays if volume_overlays is None else volume_overlays, software_version, store
        )
        self.overlay: Callable[..., np.ndarray] | None = None
        if overlays:
            self.overlay = overlay_rgb

    def _put(self, name: str, png: bytes) -> list[Any]:
        """Write the PNG bytes ``png`` at ``name``; [name, size] for the journal."""
        return [name, write_bytes_atomic(self.out / name, png, fsync=FSYNC_PER_IMAGE)]

    def __call__(self, ld: Loaded, mask: np.ndarray, prob: np.ndarray | None, latency_ms: float) -> Row:
        """Encode and write ``mask`` (uint8 0/1), ``prob`` and the overlay; the row, ``ok`` or why not."""
        it = ld.item
        row = _base_row(it)
        row["latency_ms"] = round(latency_ms, 3)
        row["_stat"] = ld.stat  # journal only: --resume redoes an input whose file changed since
        if ld.volume is not None:
            try:
                row = self.volumes.write(row, it, ld.volume, mask, prob)
            except DiskFullError:
                raise  # not this input's fault: the run stops (exit 3) and --resume continues
            except Exception as e:  # a failing metric, a folder removed under the run: this input fails
                row["status"] = "failed"
                row["error"] = f"{it.image}: writing outputs failed ({describe(e)})"
            row["_e2e_ms"] = round((time.perf_counter() - ld.t0) * 1000.0, 3)
            row["seconds"] = round(row["_e2e_ms"] / 1000.0, 3)
            return row
        try:
            assert ld.slice is not None
            mask, prob = self.predictor.finish_slice(ld.slice, mask, prob)
        except Exception as e:
            row["error"] = f"{it.image}: post-processing failed ({describe(e)})"
            return row
        image = ld.original
        h, w = image.shape
        row.update(height=h, width=w)
        pred = mask.astype(bool, copy=False)
        try:
            files: dict[str, list[Any]] = {"mask": self._put(it.mask_name, encode_mask_png(mask * np.uint8(255)))}
            if prob is not None and self.prep.save_probabilities:
                p16 = np.rint(np.clip(prob, 0.0, 1.0) * 65535.0).astype(np.uint16)
                files["probability"] = self._put(it.prob_name, encode_png(p16))
            if self.overlay is not None:
                files["overlay"] = self._put(it.overlay_name, encode_png(self.overlay(image, pred, ld.truth)))
        except DiskFullError:
            raise  # not this input's fault: the run stops (exit 3) and --resume continues
        except Exception as e:  # a folder removed under the run: this input fails, the run goes on
            row["error"] = f"{it.image}: writing outputs failed ({describe(e)})"
            return row
        row["output"] = it.mask_name
        if ld.notes:
            row["notes"] = "; ".join(ld.notes)
            if any(n.startswith(WINDOW_ESTIMATED) for n in ld.notes):
                row["qc_flags"] = "window_estimated"
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


class OrderedCsv:
    """per_image.csv in input order, through a reorder buffer (bounded by the inputs in flight).

    Rows are written under a temporary name; :meth:`finish` fsyncs it and renames it to
    per_image.csv, so that name only ever holds a complete table. ``indices`` are the
    rows' indices in order (a split run's part has some of the inputs); default 0..n-1.
    """

    def __init__(self, path: Path, n: int, indices: Sequence[int] | None = None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
        self.f = open(self.tmp, "w", encoding="utf-8", newline="")
        self.f.write(",".join(PER_IMAGE_COLUMNS) + "\n")
        self.n = n
        self.order: Sequence[int] = range(n) if indices is None else list(indices)
        self.next = 0  # position in ``order`` of the next row to write
        self.pending: dict[int, Row] = {}

    def add(self, row: Row) -> list[Row]:
        """Take one row (any index); write every row whose turn has come. Returns those, in input order."""
        self.pending[int(row["index"])] = row
        written = []
        while self.next < self.n and self.order[self.next] in self.pending:
            ready = self.pending.pop(self.order[self.next])
            self.f.write(csv_line(ready))
            written.append(ready)
            self.next += 1
        return written

    def add_all(self, rows: Iterable[Row]) -> list[Row]:
        return [w for row in rows for w in self.add(row)]

    def finish(self, missing: Callable[[int], Row]) -> list[Row]:
        """Fill the indices no row came for with ``missing(index)``, then put per_image.csv in place."""
        written: list[Row] = []
        while self.next < self.n:  # the next index is never pending here: add() would have written it
            written += self.add(missing(self.order[self.next]))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return written

    def abandon(self) -> None:
        """Drop the table (an interrupted run: the journal keeps what was done)."""
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)
