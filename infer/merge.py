"""``liverseg-merge OUT``: the whole run's tables and report from the parts of a split run.

The parts (``liverseg-infer --num-parts N --part-id K --out OUT``, layout in
:mod:`liverseg.infer.shard`) wrote their masks into ``OUT/masks/`` and their rows into
``OUT/parts/part-K-of-N/``. :func:`merge_parts` checks that

* no part is running (it takes the folder's lock exclusively, which every running
  part holds shared);
* every part 0..N-1 ran to its end (its ``summary.json`` is there) with the split's
  model, contract and inputs (``split.json``);
* the parts' rows cover every input index exactly once, each part its own block;

then writes ``OUT/per_image.csv`` (each row as its part wrote it, in input order),
``OUT/per_volume.csv`` for volume inputs, ``OUT/summary.json`` and ``OUT/report.html``:
the files a whole run writes, equal to them apart from the timings. The counts and
metrics are computed again from the parts' journal rows, as a whole run computes
them from its rows. ``wall_seconds`` is the longest part's (they ran side by side),
``model_seconds`` the sum; ``parts`` in summary.json lists each part's command,
device and times.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import command, raw_argv
from liverseg.core.errors import EXIT_FAILED, EXIT_OK, UsageError, describe
from liverseg.core.files import remove_stale_temporaries, write_text_atomic
from liverseg.infer.inputs import MASK_DIR, OVERLAY_DIR, PER_IMAGE_COLUMNS, PROB_DIR, RUN_STATE, csv_line
from liverseg.infer.outcome import RunReport, summary_table
from liverseg.infer.resume import JOURNAL, RunLock, read_journal
from liverseg.infer.shard import SPLIT_CHECKED, contract_sha256, part_bounds, part_dir, read_split
from liverseg.infer.volumes import SLICES_DIR, write_volume_tables

__all__ = ["merge_parts", "main"]

PER_IMAGE = "per_image.csv"
SUMMARY = "summary.json"
MAX_LISTED = 10  # indices named in a gap or overlap message

Row = dict[str, Any]
Log = Callable[[str], None]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(what) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a JSON object")
    return data


def _read_rows(path: Path) -> list[dict[str, str]]:
    """A part's per_image.csv as string cells (written back by :func:`csv_line` they are the same bytes)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != PER_IMAGE_COLUMNS:
            raise UsageError(f"{path}: not a per_image.csv of this liverseg version")
        return [dict(zip(PER_IMAGE_COLUMNS, cells)) for cells in reader]


class _Part:
    """One part's folder, checked against the split record."""

    def __init__(self, out: Path, k: int, split: dict[str, Any]) -> None:
        n_parts = int(split["num_parts"])
        self.id = k
        self.dir = part_dir(out, k, n_parts)
        rel = self.dir.relative_to(out)
        run = _read_json(self.dir / RUN_STATE, f"part {k} of {n_parts} has not run ({rel}/{RUN_STATE} is missing)")
        if run.get("part") != {"id": k, "num_parts": n_parts} or run.get("model_sha256") != split["model_sha256"]:
            raise UsageError(f"{rel}: its run.json is not part {k} of this split's model")
        self.summary = _read_json(
            self.dir / SUMMARY,
            f"part {k} of {n_parts} has not finished ({rel}/{SUMMARY} is missing); "
            "finish it with its command plus --resume",
        )
        model = self.summary.get("model") or {}
        if model.get("sha256") != split["model_sha256"]:
            raise UsageError(f"{rel}: ran another model ({str(model.get('path'))!r}) than the split's")
        if contract_sha256(model.get("contract") or {}) != split["contract_sha256"]:
            raise UsageError(f"{rel}: ran with another contract than the split's")
        self.rows = _read_rows(self.dir / PER_IMAGE)
        if len(self.rows) != self.summary.get("n_inputs"):
            raise UsageError(
                f"{rel}: {PER_IMAGE} has {len(self.rows)} rows, its summary.json says {self.summary.get('n_inputs')}"
            )
        lo, hi = part_bounds(int(split["n_inputs"]), n_parts, k)
        if len(self.rows) != hi - lo:
            raise UsageError(f"{rel}: {len(self.rows)} inputs, but part {k} of {n_parts} has {hi - lo}")
        self.journal: dict[int, Row] = {}
        for row in read_journal(self.dir / JOURNAL):  # a later row for an input wins, as on --resume
            self.journal[int(row["index"])] = row

    def report_row(self, cells: dict[str, str]) -> Row:
        """The row a whole run's report takes: the journal's (typed), else the table's (a skipped input)."""
        row = self.journal.get(int(cells["index"]))
        if row is not None and row.get("status") == cells["status"] and row.get("input") == cells["input"]:
            return row
        return dict(cells)

    def about(self) -> dict[str, Any]:
        s = self.summary
        return {
            "id": self.id,
            "n_inputs": s.get("n_inputs"),
            "n_ok": s.get("n_ok"),
            "n_failed": s.get("n_failed"),
            "n_skipped": s.get("n_skipped"),
            "n_resumed": s.get("n_resumed"),
            "device": s.get("device"),
            "provider": s.get("provider"),
            "threads": s.get("threads"),
            "wall_seconds": s.get("wall_seconds"),
            "model_seconds": s.get("model_seconds"),
            "command": s.get("command"),
            "started": s.get("started"),
            "finished": s.get("finished"),
        }


def _listed(indices: list[Any]) -> str:
    more = f" and {len(indices) - MAX_LISTED} more" if len(indices) > MAX_LISTED else ""
    return ", ".join(str(i) for i in indices[:MAX_LISTED]) + more


def _check_cover(parts: list[_Part], n: int) -> dict[int, tuple[_Part, dict[str, str]]]:
    """Input index -> (its part, its row); :class:`UsageError` on an overlap or a gap."""
    owner: dict[int, tuple[_Part, dict[str, str]]] = {}
    overlaps: list[str] = []
    for p in parts:
        for cells in p.rows:
            try:
                i = int(cells["index"])
            except ValueError:
                raise UsageError(f"{p.dir}/{PER_IMAGE}: index {cells['index']!r} is not a number") from None
            if i in owner:
                overlaps.append(f"{i} (parts {owner[i][0].id} and {p.id})")
            owner[i] = (p, cells)
    if overlaps:
        raise UsageError(f"parts overlap: input(s) {_listed(overlaps)}")
    gaps = [i for i in range(n) if i not in owner]
    extra = sorted(i for i in owner if not 0 <= i < n)
    if gaps or extra:
        said = [f"no part has input(s) {_listed(gaps)}"] * bool(gaps) + [f"unknown input(s) {_listed(extra)}"] * bool(
            extra
        )
        raise UsageError("; ".join(said))
    return owner


def merge_parts(out: str | Path, *, report: bool = True, command: str = "", log: Log | None = None) -> dict[str, Any]:
    """Check the parts in ``out`` and write the whole run's files (module docstring); returns summary.json's content."""
    out = Path(out)
    log = log or (lambda s: print(s, file=sys.stderr))
    split = read_split(out)
    missing = [k for k in SPLIT_CHECKED if k not in split]
    if missing:
        raise UsageError(f"{out}/split.json lacks {', '.join(missing)}")
    lock = RunLock(
        out,
        command,
        busy=f"{out}: parts of the split run are still running (or another run holds the folder); "
        "merge when every part has ended",
    )
    try:
        n = int(split["n_inputs"])
        parts = [_Part(out, k, split) for k in range(int(split["num_parts"]))]
        owner = _check_cover(parts, n)
        removed = remove_stale_temporaries([out / d for d in ("", MASK_DIR, PROB_DIR, OVERLAY_DIR, SLICES_DIR)])
        if removed:
            log(f"removed {removed} partial file(s) left by interrupted parts")
        run = RunReport(n, n_resumed=sum(int(p.summary.get("n_resumed") or 0) for p in parts))
        lines = [",".join(PER_IMAGE_COLUMNS) + "\n"]
        for i in range(n):
            p, cells = owner[i]
            lines.append(csv_line(cells))
            run.add(p.report_row(cells))
        run.timed(
            max(float(p.summary.get("wall_seconds") or 0) for p in parts),
            sum(float(p.summary.get("model_seconds") or 0) for p in parts),
            sum(int(p.summary.get("n_run") or 0) for p in parts),
        )
        counted = set(RunReport(0).summary({}))
        about = {k: v for k, v in parts[0].summary.items() if k not in counted and k != "part"}
        about["started"] = min(str(p.summary.get("started")) for p in parts)
        about["finished"] = max(str(p.summary.get("finished")) for p in parts)
        about["command"] = command
        about["parts"] = [p.about() for p in parts]
        summary = run.summary(about)
        write_text_atomic(out / PER_IMAGE, "".join(lines))
        if run.volume_rows:
            write_volume_tables(out, run.volume_rows)
        write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2, default=str))
        if report:
            try:
                from liverseg.infer.report import write_report

                write_report(out)
            except Exception as e:  # the report is a convenience; never lose the merge over it
                log(f"warning: report.html not written ({describe(e)})")
        return summary
    finally:
        lock.release()


@command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html.")
def main(out: Path, report: bool) -> None:
    """Merge the parts of a split run (liverseg-infer --num-parts N --part-id K --out OUT) in OUT.

    Exit codes as liverseg-infer's: 0 every input done, 1 some failed or were skipped,
    2 the parts do not make one run (missing, unfinished, another model, a gap or an overlap).
    """
    cmd = shlex.join(raw_argv("liverseg-merge"))
    summary = merge_parts(out, report=report, command=cmd, log=lambda s: click.echo(s, err=True))
    click.echo(summary_table(summary, out))
    sys.exit(EXIT_FAILED if summary["n_failed"] or summary["n_skipped"] else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="liverseg-merge")
