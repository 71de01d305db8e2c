"""A CT series end to end: DICOM in, NIfTI mask out, against the model alone, with peak memory.

``python -m liverseg.benchmarks.volume`` writes a synthetic axial CT series (``--slices``
slices of ``--size`` x ``--size`` int16 DICOM files with full geometry, made from the
synthetic CT anatomy of :mod:`liverseg.apps.synthetic`: gray 0..255 is HU 0..255, air
-1000), exports a U-Net of ``--width`` with seeded random weights (speed does not
depend on the weights), and measures, ``--rounds`` times, alternating the order:

* **model only**: the runner's own session (same threads and spinning setting) over
  the series' model inputs already in memory, batch ``--batch``, one warm-up call;
  only ``session.run`` is timed.
* **end to end**: ``liverseg-infer SERIES --model M --out O`` in a fresh interpreter,
  timed around the whole command (interpreter start, imports, listing and reading the
  DICOM files, windowing, the model, the NIfTI mask, ``per_image.csv``,
  ``per_volume.csv``, ``summary.json``; ``--report`` adds ``report.html`` and its
  overlays). Its peak resident memory is the child's own ``VmHWM`` at exit, compared
  with the budget: the input volume (int16) + the output mask (uint8) + 500 MB.

``--model FILE`` runs an existing export instead of the random-weight U-Net (e.g. the
shipped ``liverseg/reference/model.onnx``, which records its 1.5 mm training pixels and
its engine gates): both loops then use ``liverseg-infer``'s defaults, and the engine
``auto`` chooses is printed and recorded.

The result (machine, versions, date, every round) goes to ``OUT/volume.json`` and one
line per round to ``OUT/volume.csv``; a summary is printed.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from liverseg.benchmarks.machine import run_cli, stamp
from liverseg.core.cli import command

BUDGET_EXTRA_MB = 500.0
COLUMNS = (
    "round",
    "slices",
    "size",
    "width",
    "batch",
    "model_only_slices_per_s",
    "e2e_wall_s",
    "e2e_slices_per_s",
    "e2e_vs_model",
    "runner_slices_per_s",
    "runner_model_slices_per_s",
    "peak_rss_mb",
    "budget_mb",
    "exit_code",
)


def write_synthetic_series(folder: Path, slices: int, size: int, spacing: tuple[float, float, float]) -> float:
    """Write the series; returns seconds taken. One synthetic patient, its liver through the middle slices."""
    from liverseg.apps.dicom_synth import write_series
    from liverseg.apps.synthetic import Patient, make_slice

    rng = np.random.default_rng(0)
    patient = Patient.sample(rng)
    t0 = time.perf_counter()
    hu = np.empty((slices, size, size), dtype=np.int16)
    for k in range(slices):
        z = -0.4 + 1.6 * k / max(1, slices - 1)  # from below the liver's tip to above its dome
        gray, _ = make_slice(rng, (size, size), patient=patient, z=z)
        hu[k] = np.where(gray == 0, -1000, gray.astype(np.int16))
    write_series(folder, hu, spacing=spacing, patient_name="Bench^Volume", patient_id="BENCH")
    return time.perf_counter() - t0


def export_model(path: Path, width: int, model_spacing: float | None) -> Path:
    from liverseg.benchmarks.artifacts import random_checkpoint
    from liverseg.export.onnx import export_onnx

    ckpt = random_checkpoint("unet", width)
    ckpt.config = {**ckpt.config, "pixel_spacing_mm": model_spacing}
    return Path(export_onnx(ckpt, path, example_shape=(1, 1, 64, 64)))


def describe_model(model: Path, width: int) -> tuple[str, int, float | None]:
    """(the engine ``auto`` chooses for ``model`` here, with why; its U-Net width; its training pixel spacing)."""
    from liverseg.core.choose import choose, describe
    from liverseg.core.contract import ct_settings, read_onnx_contract

    contract = read_onnx_contract(model)
    args = (contract.get("model") or {}).get("args") or {}
    spacing = ct_settings(contract)[1]
    chosen = choose(model, device="cpu")  # as liverseg-infer chooses
    return describe(chosen), int(args.get("width", width)), spacing


def model_only(model: Path, series: Path, batch: int, threads: int | None, spinning: bool) -> tuple[float, int]:
    """(slices per second inside ``session.run``, number of slices) over the series' model inputs."""
    from liverseg.core.contract import ct_settings, read_onnx_contract
    from liverseg.infer.volumes import load_volume
    from liverseg.predict.model import open_session
    from liverseg.predict.predictor import Prep

    window, model_spacing = ct_settings(read_onnx_contract(model))
    sess = open_session(model, device="cpu", threads=threads, spinning=spinning)  # the engine liverseg-infer takes
    prep = Prep(window=window, model_spacing=model_spacing)
    vi = load_volume(str(series), None, "dicom", prep)
    x = vi.model_in
    sess.run(np.ascontiguousarray(x[:batch, None]))  # warm-up
    t = 0.0
    for k in range(0, x.shape[0], batch):
        b = np.ascontiguousarray(x[k : k + batch, None])
        t0 = time.perf_counter()
        sess.run(b)
        t += time.perf_counter() - t0
    return x.shape[0] / t, int(x.shape[0])


def end_to_end(
    model: Path, series: Path, out: Path, batch: int, threads: int | None, report: bool
) -> tuple[float, float, dict[str, Any], int]:
    """(wall seconds, peak RSS in MB, summary.json, exit code) of ``liverseg-infer`` in a fresh interpreter."""
    shutil.rmtree(out, ignore_errors=True)
    args = [str(series), "--model", str(model), "--out", str(out), "--device", "cpu", "--batch-size", str(batch)]
    args += ["--no-progress", "--report" if report else "--no-report"]
    if threads:
        args += ["--threads", str(threads)]
    hwm_file = out.parent / f".{out.name}-hwm"
    code, wall, peak, err = run_cli("liverseg.infer.cli", "liverseg-infer", args, hwm_file)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"_stderr": err[-2000:]}
    return wall, peak, summary, code


@command()
@click.option("--slices", type=click.IntRange(min=2), default=300, show_default=True)
@click.option("--size", type=click.IntRange(min=32), default=512, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=16, show_default=True, help="U-Net width.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads [default: all CPUs].")
@click.option("--pixel-spacing", type=float, default=0.7, show_default=True, help="In-plane mm of the series' pixels.")
@click.option(
    "--model-spacing",
    type=float,
    default=None,
    help="Training pixel spacing recorded in the model's contract (slices are resampled to it); "
    "default: none, so the model runs at --size.",
)
@click.option("--report/--no-report", default=False, show_default=True, help="report.html in the e2e run.")
@click.option(
    "--model",
    "model_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An exported model.onnx (e.g. liverseg/reference/model.onnx) instead of a random-weight U-Net of "
    "--width; liverseg-infer and the model-only loop then run it with their defaults (engine and precision: "
    "auto, from its contract's gates).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-volume"),
    show_default=True,
)
def main(
    slices: int,
    size: int,
    width: int,
    batch: int,
    rounds: int,
    threads: int | None,
    pixel_spacing: float,
    model_spacing: float | None,
    report: bool,
    model_file: Path | None,
    out: Path,
) -> None:
    """Time a DICOM CT series through liverseg-infer against the model alone; record peak memory."""
    if model_file is not None and model_spacing is not None:
        raise click.UsageError("--model-spacing sets the spacing of the random-weight model; --model has its own")
    out.mkdir(parents=True, exist_ok=True)
    series = out / "series"
    if not (series.is_dir() and len(list(series.glob("*.dcm"))) == slices):
        shutil.rmtree(series, ignore_errors=True)
        secs = write_synthetic_series(series, slices, size, (2.0, pixel_spacing, pixel_spacing))
        click.echo(f"wrote {slices} DICOM slices of {size}x{size} to {series} in {secs:.1f} s")
    model = model_file or export_model(out / f"unet{width}.onnx", width, model_spacing)
    chosen, width, model_spacing = describe_model(model, width)
    click.echo(f"model {model}: width {width}, {chosen}")
    budget = (slices * size * size * 2 + slices * size * size) / 2**20 + BUDGET_EXTRA_MB
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        first_model = r % 2 == 0
        steps = ["model", "e2e"] if first_model else ["e2e", "model"]
        row: dict[str, Any] = {"round": r, "slices": slices, "size": size, "width": width, "batch": batch}
        for step in steps:
            if step == "model":
                rate, n = model_only(model, series, batch, threads, spinning=False)
                row["model_only_slices_per_s"] = rate
            else:
                wall, rss, summary, code = end_to_end(model, series, out / "e2e", batch, threads, report)
                row.update(e2e_wall_s=wall, peak_rss_mb=rss, exit_code=code, budget_mb=budget)
                row["e2e_slices_per_s"] = slices / wall
                row["runner_slices_per_s"] = summary.get("images_per_second")
                row["runner_model_slices_per_s"] = summary.get("model_images_per_second")
                if code != 0:
                    row["error"] = (summary.get("failed") or summary.get("_stderr") or "")[:500]
        row["e2e_vs_model"] = row["e2e_slices_per_s"] / row["model_only_slices_per_s"]
        rows.append(row)
        click.echo(
            f"round {r}: model only {row['model_only_slices_per_s']:.2f} slices/s; end to end {wall:.1f} s "
            f"= {row['e2e_slices_per_s']:.2f} slices/s ({100 * row['e2e_vs_model']:.0f}% of model-only; runner's "
            f"own pipeline {row['runner_slices_per_s'] or 0:.2f} slices/s); peak RSS {rss:.0f} MB "
            f"(budget {budget:.0f} MB); exit {code}"
        )
    result = {
        **stamp(),
        "settings": {"model_spacing_mm": model_spacing, "pixel_spacing_mm": pixel_spacing},
        "model": {"path": str(model), "width": width, "engine_choice": chosen},
    }
    result["rounds"] = rows
    (out / "volume.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    with (out / "volume.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    click.echo(f"wrote {out / 'volume.json'} and {out / 'volume.csv'}")


if __name__ == "__main__":  # pragma: no cover
    main()
