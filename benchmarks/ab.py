"""Two liverseg-infer setups side by side: whole commands, alternating, on the same machine in one run.

``python -m liverseg.benchmarks.ab --before OLD.onnx --before-args=--no-anatomy --out DIR``

Times ``liverseg-infer INPUT --model OLD <before-args>`` ("before") against
``liverseg-infer INPUT --model NEW <after-args>`` ("after", default: the shipped model with
its defaults), each in a fresh interpreter, around the whole command, on:

* ``slices``: ``--slices`` real 512x512 CHAOS slices (PNG), copied into a folder;
* ``series``: a synthetic 512x512 axial DICOM series of ``--series-slices`` slices
  (:func:`liverseg.benchmarks.volume.write_synthetic_series`).

``--rounds`` rounds, the order of before/after alternating round by round. Each round also
times the model alone (``model_only``: the engine ``liverseg-infer`` chooses for the after
model, in this process, over the same inputs' model pixels already in memory, batch 1, as the
run asks for its outputs; only the model call is timed), so each whole command can be put
against it. The medians of slices per second, their ratio (after / before) and each setup's
whole-command / model-only ratio are printed and written, with the machine, versions and
date, to ``DIR/ab.json``. ``--slices`` above the 78 CHAOS slices repeats them. How the reference model of the third
wave was checked against the one before it: ``docs/performance.md``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import click

from liverseg.benchmarks.machine import run_cli, stamp
from liverseg.benchmarks.volume import write_synthetic_series
from liverseg.core.cli import command


def _inputs(work: Path, data: Path, n_slices: int, series_slices: int) -> dict[str, tuple[Path, int]]:
    slices = work / "slices"
    slices.mkdir(parents=True, exist_ok=True)
    pngs = sorted((data / "chaos-ct-case" / "images").glob("*.png"))
    if not pngs:
        raise click.UsageError(f"{data / 'chaos-ct-case' / 'images'}: no slices")
    for i in range(n_slices):  # the CHAOS slices, repeated under new names where more are asked for
        p = pngs[i % len(pngs)]
        shutil.copyfile(p, slices / (p.name if i < len(pngs) else f"{p.stem}_{i // len(pngs)}{p.suffix}"))
    series = work / "series"
    if not series.is_dir():
        write_synthetic_series(series, series_slices, 512, (1.0, 0.75, 0.75))
    return {"slices": (slices, n_slices), "series": (series, series_slices)}


def model_only(model: str, folder: Path, kind: str) -> float:
    """Slices per second inside the model call over ``folder``'s model pixels (the module docstring)."""
    import numpy as np

    from liverseg.core.contract import ct_settings
    from liverseg.core.dicom import read_series
    from liverseg.predict.model import open_model
    from liverseg.predict.predictor import Prep, prepare_slice, read_slice, volume_input

    sess = open_model(None if model == "reference" else model, [], lambda line: None, device="cpu")
    window, spacing = ct_settings(sess.contract)
    prep = Prep(window=window, model_spacing=spacing)
    if kind == "series":
        vi = volume_input(read_series(folder), prep, stream=False)
        pixels, probability = list(vi.model_in), vi.resampled
    else:
        pixels = [prepare_slice(read_slice(p, prep, []), prep).pixels for p in sorted(folder.glob("*.png"))]
        probability = prep.resamples
    sess.run(np.ascontiguousarray(pixels[0][None, None]), probability=probability)  # warm-up
    seconds = 0.0
    for x in pixels:
        batch = np.ascontiguousarray(x[None, None])
        t0 = time.perf_counter()
        sess.run(batch, probability=probability)
        seconds += time.perf_counter() - t0
    return len(pixels) / seconds


@command()
@click.option("--before", "before_model", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--before-args", default="", help="extra liverseg-infer options of the before run")
@click.option(
    "--before-python",
    default=None,
    help="the Python of another liverseg installation for the before runs (e.g. a checkout of an earlier commit)",
)
@click.option("--after", "after_model", default="reference", show_default=True)
@click.option("--after-args", default="", help="extra liverseg-infer options of the after run")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/data"))
@click.option("--slices", "n_slices", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--series-slices", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def main(
    before_model: Path,
    before_args: str,
    before_python: str | None,
    after_model: str,
    after_args: str,
    data: Path,
    n_slices: int,
    series_slices: int,
    rounds: int,
    out: Path,
) -> None:
    """Time two liverseg-infer setups side by side (module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(out / "inputs", data, n_slices, series_slices)
    setups = {
        "before": [str(before_model), *before_args.split()],
        "after": [after_model, *after_args.split()],
    }
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        for what, (src, n) in inputs.items():
            rate = model_only(after_model, src, what)
            rows.append({"round": r, "input": what, "setup": "model_only", "slices": n, "slices_per_s": round(rate, 2)})
            click.echo(json.dumps(rows[-1]))
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for name in order:
                model, *extra = setups[name]
                dest = out / "runs" / f"{what}-{name}-{r}"
                shutil.rmtree(dest, ignore_errors=True)
                args = [str(src), "--model", model, "--out", str(dest), "--no-progress", *extra]
                python = before_python if name == "before" else None
                code, wall, peak, err = run_cli("liverseg.infer.cli", "liverseg-infer", args, out / "hwm.txt", python)
                row = {
                    "round": r,
                    "input": what,
                    "setup": name,
                    "slices": n,
                    "wall_s": round(wall, 3),
                    "slices_per_s": round(n / wall, 2),
                    "peak_rss_mb": round(peak, 1),
                    "exit_code": code,
                }
                if code != 0:
                    row["error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
                rows.append(row)
                click.echo(json.dumps(row))
    summary: dict[str, Any] = {}
    for what in inputs:
        med = {
            name: statistics.median(r["slices_per_s"] for r in rows if r["input"] == what and r["setup"] == name)
            for name in [*setups, "model_only"]
        }
        summary[what] = {
            **med,
            "after_vs_before": round(med["after"] / med["before"], 3),
            "before_vs_model_only": round(med["before"] / med["model_only"], 3),
            "after_vs_model_only": round(med["after"] / med["model_only"], 3),
        }
        click.echo(
            f"{what}: before {med['before']:.2f} slices/s, after {med['after']:.2f} slices/s, "
            f"after/before {summary[what]['after_vs_before']:.3f}; model alone {med['model_only']:.2f} slices/s: "
            f"before {summary[what]['before_vs_model_only']:.3f}x, after {summary[what]['after_vs_model_only']:.3f}x "
            f"of it (medians of {rounds} rounds)"
        )
    result = {"setups": setups, "before_python": before_python, "summary": summary, "rows": rows, **stamp()}
    (out / "ab.json").write_text(json.dumps(result, indent=1) + "\n")
    click.echo(f"wrote {out / 'ab.json'}")


if __name__ == "__main__":
    main()
