"""Proof that a refactor changed no output: the same inputs through two liverseg installs, compared byte by byte.

``python -m liverseg.benchmarks.identical --before OLD/.venv/bin/python --after NEW/.venv/bin/python --out DIR``
runs each side's ``liverseg-infer`` (default options, ``--report``; one extra run with
``--save-probabilities``) and the Python API (:class:`liverseg.Segmenter`, ``details=True,
probabilities=True``, in a subprocess of that python) on: the 78 CHAOS PNG slices with their
masks (a CSV list), the CHAOS DICOM series, ``lits-117`` with its label, ``totalseg-s0003``
(a neck CT, no liver) with its empty label, and a synthetic 512x512x300 DICOM series. The
data is read in place; only the CSV lists and the synthetic series are written, to DIR/inputs.

Compared, BEFORE against AFTER: every file of each CLI run folder by its bytes, except the
files that differ run to run (:data:`SKIP`); ``per_image.csv`` and ``per_volume.csv`` with
their wall-time columns (:data:`TIMING_COLUMNS`) blanked; NIfTI files by voxels, dtype, header
and affine (whether the .nii.gz bytes match too is noted: gzip stamps a time). API outputs:
arrays exactly (and the probabilities' max abs difference), the flags, statistics and notes as
JSON. The table goes to stdout and DIR/identical.json; exit 0 when all is identical, else 1.
BEFORE results are kept per case in DIR/before and reused (``--rerun-before`` runs them again).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.core.cli import command

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SKIP = {"summary.json", "run.json", "journal.jsonl", "report.html"}  # times, dates, machine, model path
TIMING_COLUMNS = {"latency_ms", "seconds"}  # per_image.csv (infer/inputs.py), per_volume.csv (infer/volumes.py)
TABLES = {"per_image.csv", "per_volume.csv"}
SYNTHETIC = (300, 512, (2.0, 0.7, 0.7))  # slices, size, (slice, row, col) mm: benchmarks/volume.py's defaults

API_SCRIPT = '''"""Written by liverseg.benchmarks.identical: the API's outputs for ITEMS.json into OUT."""
import json, sys, traceback
from pathlib import Path
import numpy as np
import liverseg

items, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
seg = liverseg.Segmenter()
for it in items:
    info = {}
    try:
        image = it["path"]
        if it["kind"] == "nibabel":
            import nibabel
            image = nibabel.load(image)
        res = seg.segment(image, details=True, probabilities=True)
        info = {"qc_flags": res.qc_flags, "statistics": res.statistics, "notes": res.notes}
        for key, value in (("mask", res.mask), ("probability", res.probability)):
            if hasattr(value, "dataobj"):  # a nibabel image
                info[key + "_affine"] = value.affine.tolist()
                info[key + "_header"] = value.header.binaryblock.hex()
                value = np.asanyarray(value.dataobj)
            if value is None:
                info[key] = None
            else:
                np.save(out / (it["name"] + "." + key + ".npy"), value)
    except Exception as e:  # the message is compared; the traceback (paths, line numbers) goes to the log
        traceback.print_exc()
        info = {"error": f"{type(e).__name__}: {e}"}
    plain = lambda o: o.tolist() if hasattr(o, "tolist") else str(o)
    (out / (it["name"] + ".json")).write_text(json.dumps(info, indent=1, sort_keys=True, default=plain) + "\\n")
'''


@dataclass
class Case:
    name: str
    cli: list[str]  # liverseg-infer's input and options, --out and --report aside
    api: list[dict[str, str]] = field(default_factory=list)  # {"name", "kind": path|nibabel, "path"}


@dataclass
class Comparison:
    files: int = 0
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_probability_diff: float = 0.0


# ---------------------------------------------------------------- comparing


def _blanked(data: bytes) -> list[list[str]] | None:
    """The CSV's rows with the timing cells blanked; None where csv.writer would not write these exact bytes."""
    text = data.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(rows)
    if buf.getvalue() != text:
        return None
    timing = {j for j, col in enumerate(rows[0] if rows else []) if col in TIMING_COLUMNS}
    return [["" if j in timing else cell for j, cell in enumerate(row)] for row in rows]


def _compare_table(name: str, a: bytes, b: bytes) -> list[str]:
    ra, rb = _blanked(a), _blanked(b)
    if ra is None or rb is None:  # then every byte counts
        return [] if a == b else [f"{name}: bytes differ (not csv.writer's layout)"]
    header = ra[0] if ra else []
    for i, (x, y) in enumerate(zip_longest(ra, rb)):
        if x != y:
            if x is None or y is None:
                return [f"{name}: {len(ra)} rows before, {len(rb)} after"]
            j = next(j for j, (p, q) in enumerate(zip_longest(x, y)) if p != q)
            col = header[j] if j < len(header) else f"#{j}"
            return [f"{name}: row {i} column {col}: {(x + [None])[j]!r} -> {(y + [None])[j]!r}"]
    return []


def _compare_nifti(name: str, a: Path, b: Path, cmp: Comparison) -> None:
    import nibabel as nib

    ia: Any = nib.load(a)
    ib: Any = nib.load(b)
    if ia.header.binaryblock != ib.header.binaryblock:
        cmp.differences.append(f"{name}: NIfTI header differs")
    if not np.array_equal(ia.affine, ib.affine):
        cmp.differences.append(f"{name}: affine differs")
    _compare_arrays(name, np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj), cmp)
    same = a.read_bytes() == b.read_bytes()
    cmp.notes.append(f"{name}: .nii.gz bytes {'identical' if same else 'differ'}")


def _compare_arrays(name: str, x: np.ndarray, y: np.ndarray, cmp: Comparison) -> None:
    if x.dtype != y.dtype or x.shape != y.shape:
        cmp.differences.append(f"{name}: {x.dtype}{list(x.shape)} -> {y.dtype}{list(y.shape)}")
        return
    diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
    if "probabilit" in name:
        cmp.max_probability_diff = max(cmp.max_probability_diff, diff)
    if not np.array_equal(x, y):
        cmp.differences.append(f"{name}: {np.count_nonzero(x != y)} values differ (max abs {diff:.3g})")


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def compare_cli(before: Path, after: Path) -> Comparison:
    """One CLI run folder against another: see the module docstring for what counts."""
    cmp = Comparison()
    for rel in sorted(_files(before) | _files(after)):
        name = rel.rsplit("/", 1)[-1]
        if name in SKIP or ".lock" in name:
            continue
        a, b = before / rel, after / rel
        cmp.files += 1
        if not (a.is_file() and b.is_file()):
            cmp.differences.append(f"{rel}: only {'before' if a.is_file() else 'after'}")
        elif name in TABLES:
            cmp.differences += _compare_table(rel, a.read_bytes(), b.read_bytes())
        elif name.endswith((".nii", ".nii.gz")):
            _compare_nifti(rel, a, b, cmp)
        elif a.read_bytes() != b.read_bytes():
            cmp.differences.append(f"{rel}: bytes differ")
    return cmp


def compare_api(before: Path, after: Path) -> Comparison:
    """The API's saved arrays (exactly) and JSON (equal) of one side against the other's."""
    cmp = Comparison()
    for rel in sorted(_files(before) | _files(after)):
        a, b = before / rel, after / rel
        cmp.files += 1
        if not (a.is_file() and b.is_file()):
            cmp.differences.append(f"{rel}: only {'before' if a.is_file() else 'after'}")
        elif rel.endswith(".npy"):
            _compare_arrays(rel, np.load(a), np.load(b), cmp)
        else:
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            keys = [k for k in sorted(set(ja) | set(jb)) if ja.get(k) != jb.get(k)]
            if "error" in ja and not keys:
                cmp.notes.append(f"{rel}: raises on both sides: {ja['error']}")
            if keys:
                cmp.differences.append(f"{rel}: {', '.join(keys)} differ" + (" (error)" if "error" in keys else ""))
    return cmp


# ---------------------------------------------------------------- running


def prepare(inputs: Path) -> list[Case]:
    """The cases, with the CHAOS CSV lists and the synthetic series written under ``inputs`` once."""
    chaos, lits, neck = DATA / "chaos-ct-case", DATA / "lits-117", DATA / "totalseg-s0003"
    pngs = sorted((chaos / "images").glob("*.png"))
    lists = inputs / "chaos-png"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "test_x.csv").write_text("X\n" + "".join(f"{p}\n" for p in pngs))
    (lists / "test_y.csv").write_text("Y\n" + "".join(f"{chaos / 'masks' / p.name}\n" for p in pngs))
    series = inputs / "synthetic-300"
    slices, size, spacing = SYNTHETIC
    if len(list(series.glob("*.dcm"))) != slices:
        from liverseg.benchmarks.volume import write_synthetic_series

        shutil.rmtree(series, ignore_errors=True)
        write_synthetic_series(series, slices, size, spacing)

    def volume(name: str, path: Path, label: Path) -> Case:
        both = [{"name": f"{name}-path", "kind": "path", "path": str(path)}]
        both.append({"name": f"{name}-nibabel", "kind": "nibabel", "path": str(path)})
        return Case(name, [str(path), "--labels", str(label)], both)

    lits_cli = [str(lits / "volume.nii.gz"), "--labels", str(lits / "segmentation.nii.gz")]
    return [
        Case(
            "chaos-png",
            [str(lists / "test_x.csv"), "--labels", str(lists / "test_y.csv")],
            [{"name": p.stem, "kind": "path", "path": str(p)} for p in pngs],
        ),
        Case("chaos-dicom", [str(chaos / "dicom")], [{"name": "series", "kind": "path", "path": str(chaos / "dicom")}]),
        volume("lits-117", lits / "volume.nii.gz", lits / "segmentation.nii.gz"),
        Case("lits-117-probabilities", [*lits_cli, "--save-probabilities"]),
        volume("totalseg-s0003", neck / "ct.nii.gz", neck / "liver.nii.gz"),
        Case("synthetic-300", [str(series)], [{"name": "series", "kind": "path", "path": str(series)}]),
    ]


def _run(cmd: list[str], log: Path, cwd: Path) -> int:
    with log.open("w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, check=False).returncode


def run_side(python: Path, side: Path, case: Case, work: Path) -> dict[str, Any]:
    """Both ways of one case with one install; its exit codes, also kept in side/status/CASE.json."""
    for sub in ("cli", "api"):
        shutil.rmtree(side / sub / case.name, ignore_errors=True)
    (side / "logs").mkdir(parents=True, exist_ok=True)
    script = python.parent / "liverseg-infer"
    infer = [str(script)] if script.exists() else [str(python), "-m", "liverseg.infer.cli"]
    out = side / "cli" / case.name
    rc = {
        "cli": _run(
            [*infer, *case.cli, "--out", str(out), "--report", "--no-progress"],
            side / "logs" / f"{case.name}.cli.log",
            work,
        )
    }
    if case.api:
        items = side / "logs" / f"{case.name}.items.json"
        items.write_text(json.dumps(case.api, indent=1))
        cmd = [str(python), str(work / "api_run.py"), str(items), str(side / "api" / case.name)]
        rc["api"] = _run(cmd, side / "logs" / f"{case.name}.api.log", work)
    status = {"python": str(python), "case": asdict(case), "rc": rc}
    (side / "status").mkdir(exist_ok=True)
    (side / "status" / f"{case.name}.json").write_text(json.dumps(status, indent=1) + "\n")
    return rc


def _cached(python: Path, side: Path, case: Case) -> dict[str, Any] | None:
    path = side / "status" / f"{case.name}.json"
    status = json.loads(path.read_text()) if path.is_file() else {}
    return status["rc"] if status.get("python") == str(python) and status.get("case") == asdict(case) else None


@command()
@click.option(
    "--before",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The python of the install before the change (its venv's bin/ holds liverseg-infer).",
)
@click.option(
    "--after",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The python of the install after the change.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Working folder (outside the repository): inputs/, before/, after/, identical.json.",
)
@click.option("--case", "only", multiple=True, help="Only these cases (repeatable) [default: all].")
@click.option("--rerun-before", is_flag=True, help="Run the BEFORE side again even where DIR/before holds it.")
def main(before: Path, after: Path, out: Path, only: tuple[str, ...], rerun_before: bool) -> None:
    """Run the same inputs through two installs (CLI and API) and show that every output is identical."""
    out = out.resolve()
    if out.is_relative_to(Path(__file__).resolve().parents[1]):
        raise click.BadParameter("must lie outside the repository", param_hint="--out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "api_run.py").write_text(API_SCRIPT)
    cases = [c for c in prepare(out / "inputs") if not only or c.name in only]
    results: list[dict[str, Any]] = []
    for case in cases:
        rc_before = None if rerun_before else _cached(before, out / "before", case)
        if rc_before is None:
            click.echo(f"{case.name}: BEFORE ({before})", err=True)
            rc_before = run_side(before, out / "before", case, out)
        click.echo(f"{case.name}: AFTER ({after})", err=True)
        rc_after = run_side(after, out / "after", case, out)
        for way in rc_after:
            cmp = (compare_cli if way == "cli" else compare_api)(
                out / "before" / way / case.name, out / "after" / way / case.name
            )
            if rc_before[way] != rc_after[way]:
                cmp.differences.insert(0, f"exit code {rc_before[way]} -> {rc_after[way]} (logs in after/logs)")
            results.append(
                {
                    "case": case.name,
                    "way": way.upper(),
                    "exit_codes": [rc_before[way], rc_after[way]],
                    **asdict(cmp),
                    "identical": not cmp.differences,
                }
            )
    identical = bool(results) and all(r["identical"] for r in results)
    report = {"before": str(before), "after": str(after), "identical": identical, "results": results}
    (out / "identical.json").write_text(json.dumps(report, indent=1) + "\n")
    click.echo(f"{'case':24} {'way':4} {'files':>5}  result")
    for r in results:
        nifti = [n for n in r["notes"] if n.endswith("differ")]
        extra = f"; {len(nifti)} .nii.gz differ in bytes only" if nifti else ""
        raised = sum("raises on both sides" in n for n in r["notes"])
        extra += f"; {raised} inputs raise the same error on both sides" if raised else ""
        prob = f"; probability max abs diff {r['max_probability_diff']:.3g}" if r["way"] == "API" else ""
        verdict = "identical" if r["identical"] else "DIFFERENT: " + "; ".join(r["differences"][:3])
        click.echo(f"{r['case']:24} {r['way']:4} {r['files']:5d}  {verdict}{extra}{prob}")
    click.echo(f"{'all identical' if identical else 'NOT identical'}; details in {out / 'identical.json'}")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
