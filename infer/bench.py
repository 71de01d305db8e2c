"""End-to-end vs model-only throughput of ``liverseg-infer``, measured in one process.

    python -m liverseg.infer.bench FOLDER_OR_CSV --model M.onnx [--limit N] [--device cpu|cuda] [--repeat 2]

For each repeat, interleaved (the machine is shared; compare only numbers from one run):

1. ``isolated``: the inputs decoded into memory first, then ``session.run`` on each
   batch in a plain loop -- no decode/encode threads beside the model.
2. ``pipeline``: the real runner (threads, PNG encoding, journal, per_image.csv), which
   reports its own model-only rate (time inside ``session.run``) and its end-to-end rate.
   Both spinning settings of onnxruntime's intra-op threads are run (``--spinning both``).

Prints one JSON line per measurement and a small table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from liverseg.core.cli import command
from liverseg.infer.io import list_inputs, load
from liverseg.infer.runner import Options, run_inference
from liverseg.infer.session import open_session


def isolated_rate(
    model: Path, images: list[np.ndarray], *, device: str, batch_size: int, spinning: bool, threads: int | None
) -> float:
    """Images per second of ``session.run`` alone on pre-decoded images (one warm-up batch excluded)."""
    sess = open_session(model, device=device, spinning=spinning, threads=threads)
    batches = [np.stack(images[i : i + batch_size])[:, None] for i in range(0, len(images), batch_size)]
    sess.run(batches[0])  # warm-up (allocations, cuDNN search)
    t = time.perf_counter()
    n = 0
    for b in batches:
        sess.run(b)
        n += len(b)
    return n / (time.perf_counter() - t)


@command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--spinning", type=click.Choice(["off", "on", "both"]), default="both", show_default=True)
def main(
    source: Path,
    model: Path,
    limit: int | None,
    device: str,
    batch_size: int | None,
    threads: int | None,
    repeat: int,
    spinning: str,
) -> None:
    """Measure end-to-end vs model-only images/s on SOURCE."""
    items = list_inputs(source, limit=limit)
    images = [ld.image for ld in (load(it) for it in items) if ld.image is not None]
    bs = batch_size or (8 if device == "cuda" else 1)
    spins = {"off": [False], "on": [True], "both": [False, True]}[spinning]
    rows = []
    for r in range(repeat):
        for spin in spins:
            iso = isolated_rate(model, images, device=device, batch_size=bs, spinning=spin, threads=threads)
            with tempfile.TemporaryDirectory() as tmp:
                res = run_inference(
                    Options(
                        source=source,
                        model=model,
                        out=Path(tmp) / "run",
                        device=device,
                        batch_size=bs,
                        threads=threads,
                        limit=limit,
                        spinning=spin,
                        progress=False,
                        report=False,
                    ),
                    log=lambda s: None,
                )
            s = res.summary or {}
            row = {
                "repeat": r,
                "spinning": spin,
                "n": len(images),
                "batch_size": bs,
                "device": s.get("device"),
                "provider": s.get("provider"),
                "threads": s.get("threads"),
                "isolated_model_ips": round(iso, 4),
                "pipeline_model_ips": s.get("model_images_per_second"),
                "end_to_end_ips": s.get("images_per_second"),
                "end_to_end_vs_pipeline_model": s.get("pipeline_efficiency"),
                "end_to_end_vs_isolated_model": round(s.get("images_per_second", 0) / iso, 4) if iso else None,
                "exit_code": res.exit_code,
                "error": res.message or None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    click.echo(
        f"{'spin':5s} {'isolated':>9s} {'pipe-model':>10s} {'end-to-end':>10s} {'e2e/pipe':>8s} {'e2e/iso':>8s}",
        err=True,
    )
    for row in rows:
        click.echo(
            f"{str(row['spinning']):5s} {row['isolated_model_ips']:9.3f} {row['pipeline_model_ips']:10.3f} "
            f"{row['end_to_end_ips']:10.3f} {row['end_to_end_vs_pipeline_model']:8.3f} "
            f"{row['end_to_end_vs_isolated_model']:8.3f}",
            err=True,
        )
    sys.exit(0 if all(r["exit_code"] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main(prog_name="python -m liverseg.infer.bench")
