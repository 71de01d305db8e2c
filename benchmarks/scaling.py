"""How cost grows with the number of inputs: ``liverseg-infer`` on 100, 1,000 and 10,000 files.

The inputs are small synthetic slices (64x64 PNG by default; the count is what is
measured, not the model) and the model a tiny U-Net exported through
``liverseg.export``. Each count runs the real command line
(``liverseg.infer.cli.main``) in its own fresh interpreter, so its peak resident
memory is that process's alone: the child reads its own ``VmHWM`` after the command
returns and prints it. (``ru_maxrss`` from ``wait4`` would be wrong here: at
``exec`` Linux folds the high-water mark of the *forking* process's memory into the
child's ``maxrss``, so every child would report at least the benchmark process's
own peak.) Memory must stay flat: a runner that
kept per-image results, decoded images or masks in memory would grow with the
count.

Folders: the largest count's files are written once (a few distinct PNGs written
many times over, so making 10,000 files takes seconds); every smaller count is a
folder of hard links to the first N of them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.core.cli import command
from liverseg.core.errors import UsageError, describe

SCALING_COLUMNS = (
    "section",
    "inputs",
    "width",
    "size",
    "wall_s",
    "images_per_s",
    "runner_images_per_s",
    "runner_model_images_per_s",
    "peak_rss_mb",
    "rss_vs_smallest",
    "n_ok",
    "n_failed",
    "exit_code",
    "error",
)


def write_inputs(folder: Path, n: int, size: int = 64, distinct: int = 32, seed: int = 0) -> list[Path]:
    """``n`` synthetic PNG slices ``00000.png`` ... in ``folder`` (``distinct`` different pictures, cycled)."""
    from PIL import Image

    from liverseg.apps.synthetic import make_slice

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(min(distinct, n)):
        img, _ = make_slice(rng, (size, size))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        blobs.append(buf.getvalue())
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.png"
        p.write_bytes(blobs[i % len(blobs)])
        paths.append(p)
    return paths


def link_subset(files: list[Path], folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in files[:n]:
        dst = folder / p.name
        try:
            os.link(p, dst)
        except OSError:
            shutil.copyfile(p, dst)
    return folder


def run_child(args: list[str], log_path: Path, timeout: float) -> tuple[int, float, int | None]:
    """(exit code, wall seconds, peak RSS KiB of the child) for ``liverseg-infer ARGS`` in a fresh interpreter."""
    cmd = [sys.executable, "-m", "liverseg.benchmarks.scaling", "--child", *args]
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        p = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.perf_counter() - t0
    peak = None
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith(CHILD_MARK):
            info = json.loads(line[len(CHILD_MARK) :])
            peak = info.get("vmhwm_kb")
            return int(info.get("exit_code", p.returncode)), wall, peak
    return p.returncode, wall, peak


CHILD_MARK = "LIVERSEG_BENCH_CHILD "


@command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--child", is_flag=True, help="Run liverseg-infer INFER_ARGS here, then print its exit code and VmHWM.")
@click.argument("infer_args", nargs=-1, type=click.UNPROCESSED)
def child_main(child: bool, infer_args: tuple[str, ...]) -> None:
    """Internal: one count of the scaling section, run by :func:`run_child` in a fresh interpreter."""
    from liverseg.benchmarks.machine import rss_kb
    from liverseg.infer.cli import main as infer_main

    if not child:
        raise UsageError("usage: python -m liverseg.benchmarks.scaling --child LIVERSEG-INFER-ARGS...")
    code: Any = 0
    try:
        infer_main.main(args=list(infer_args), prog_name="liverseg-infer", standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    print(CHILD_MARK + json.dumps({"exit_code": code, "vmhwm_kb": rss_kb().get("VmHWM")}), flush=True)


def run_scaling(
    counts: list[int],
    *,
    width: int = 4,
    size: int = 64,
    threads: int | None = None,
    workdir: Path,
    timeout: float = 900,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    from liverseg.benchmarks.artifacts import Artifacts, random_checkpoint

    log = log or (lambda s: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    counts = sorted(int(c) for c in counts)
    art = Artifacts(random_checkpoint("unet", width), workdir / "model", log=log)
    model = art.path("onnx")
    t0 = time.perf_counter()
    files = write_inputs(workdir / "all", counts[-1], size)
    log(f"  scaling: wrote {len(files)} synthetic {size}x{size} PNGs in {time.perf_counter() - t0:.1f} s")
    rows: list[dict[str, Any]] = []
    for n in counts:
        row: dict[str, Any] = {c: None for c in SCALING_COLUMNS}
        row.update(section="scaling", inputs=n, width=width, size=size, error="")
        rows.append(row)
        src = workdir / "all" if n == counts[-1] else link_subset(files, workdir / f"n{n}", n)
        out = workdir / f"out-{n}"
        args = [str(src), "--model", str(model), "--out", str(out), "--device", "cpu", "--no-progress"]
        if threads:
            args += ["--threads", str(threads)]
        try:
            code, wall, peak_kb = run_child(args, workdir / f"log-{n}.txt", timeout)
        except Exception as e:
            row["error"] = describe(e)
            continue
        row.update(exit_code=code, wall_s=wall, peak_rss_mb=peak_kb / 1024 if peak_kb else None, images_per_s=n / wall)
        summary_path = out / "summary.json"
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            row.update(
                runner_images_per_s=s.get("images_per_second"),
                runner_model_images_per_s=s.get("model_images_per_second"),
                n_ok=s.get("n_ok"),
                n_failed=s.get("n_failed"),
            )
        if code not in (0, 1):
            tail = (workdir / f"log-{n}.txt").read_text(errors="replace").strip().splitlines()[-3:]
            row["error"] = f"liverseg-infer exited {code}: {' | '.join(tail)[:300]}"
        log(
            f"  scaling {n:6d} inputs: {row['images_per_s']:.1f} img/s (process wall), "
            f"runner {row['runner_images_per_s'] or 0:.1f} img/s, "
            f"peak RSS {row['peak_rss_mb'] or 0:.0f} MB, exit {code}"
        )
        shutil.rmtree(out, ignore_errors=True)
    base = rows[0].get("peak_rss_mb")
    for r in rows:
        if base and r.get("peak_rss_mb"):
            r["rss_vs_smallest"] = r["peak_rss_mb"] / base
    return rows


if __name__ == "__main__":
    child_main(prog_name="python -m liverseg.benchmarks.scaling")
