"""End to end: the ``liverseg-infer`` runner on real 512x512 slices against the model alone.

For each ONNX Runtime backend (fp32, int8 QDQ) and each round, in one process:

* **model only**: the runner's own session (``liverseg.infer.session.open_session``,
  same threads and spinning setting) runs the slices one by one, already decoded in
  memory; only ``session.run`` is timed.
* **end to end**: :func:`liverseg.infer.runner.run_inference` on the same slice
  folder with its expert masks, timed around the whole library call: listing the
  inputs, opening the model, decoding PNGs, the model, encoding and writing masks,
  per-image metrics, ``per_image.csv``, ``summary.json`` and ``report.html``.

The two alternate (model-only first in even rounds, end-to-end first in odd ones)
so both see the same machine load. ``e2e_vs_model`` is the median over rounds of
(end-to-end rate / model-only rate) of the same round. The runner's own numbers
(``images_per_second`` from first decode to last write, ``model_images_per_second``)
and ``fixed_overhead_s`` -- the wall time outside the streamed pipeline: listing the
inputs, opening the session, writing the summary and ``report.html``; a cost per
run, not per image, so it weighs most on small runs of a cheap model -- and its macro Dice over the labelled slices are recorded beside them; the int8 row's
``dice_delta_vs_fp32`` is judged on all labelled slices, not just the few timed ones.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

E2E_COLUMNS = (
    "section",
    "backend",
    "width",
    "weights",
    "images",
    "batch",
    "rounds",
    "model_only_images_per_s",
    "e2e_images_per_s",
    "e2e_vs_model",
    "runner_images_per_s",
    "runner_model_images_per_s",
    "runner_pipeline_efficiency",
    "fixed_overhead_s",
    "dice",
    "dice_delta_vs_fp32",
    "n_failed",
    "threads",
    "provider",
    "error",
)


def _err(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0][:300] if s else ''}"


def run_e2e(
    art: Any,
    backends: list[str],
    *,
    threads: int,
    slices: int | None = None,
    rounds: int = 2,
    data_dir: Path | None = None,
    workdir: Path,
    spinning: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    from liverseg.benchmarks.backends import BACKENDS
    from liverseg.benchmarks.data import shared_data_dir
    from liverseg.core.data import discover, read_image
    from liverseg.infer.runner import Options, run_inference
    from liverseg.infer.session import open_session

    log = log or (lambda s: None)
    folder = (data_dir or shared_data_dir()) / "chaos-ct-case"
    if not (folder / "images").is_dir():
        return [{"section": "e2e", "error": f"real slices not found at {folder}; end-to-end needs ../shared/data"}]
    samples = discover(folder)
    if slices:
        samples = samples[:slices]
    images = [read_image(s.image)[None, None] for s in samples]  # decoded once, for the model-only loop
    n = len(images)
    workdir = Path(workdir)
    weights = "random (seeded)" if getattr(art.ckpt, "path", None) is None else f"checkpoint {Path(art.ckpt.path).name}"
    rows: list[dict[str, Any]] = []
    dice_fp32 = None
    for name in backends:
        row: dict[str, Any] = {c: None for c in E2E_COLUMNS}
        row.update(
            section="e2e",
            backend=name,
            width=art.ckpt.model_args.get("width"),
            weights=weights,
            images=n,
            batch=1,
            threads=threads,
            error="",
        )
        rows.append(row)
        try:
            path = art.path(BACKENDS[name].needs)
            sess = open_session(path, device="cpu", threads=threads, spinning=spinning)
            row["provider"] = sess.provider
            sess.run(images[0])  # warm-up
        except Exception as e:
            row["error"] = _err(e)
            log(f"  e2e {name}: {row['error']}")
            continue
        model_rates, e2e_rates, ratios, summaries = [], [], [], []
        for r in range(rounds):

            def model_only() -> float:
                t = 0.0
                for x in images:
                    t0 = time.perf_counter()
                    sess.run(x)
                    t += time.perf_counter() - t0
                return n / t

            def end_to_end() -> tuple[float, dict[str, Any]]:
                out = workdir / f"{name}-r{r}"
                opts = Options(
                    source=folder,
                    model=path,
                    out=out,
                    device="cpu",
                    batch_size=1,
                    threads=threads,
                    spinning=spinning,
                    progress=False,
                    limit=slices,
                    command=[
                        "liverseg-infer",
                        str(folder),
                        "--model",
                        str(path),
                        "--device",
                        "cpu",
                        "--batch-size",
                        "1",
                    ],
                )
                t0 = time.perf_counter()
                res = run_inference(opts, log=lambda s: None)
                wall = time.perf_counter() - t0
                summary = res.summary or {}
                if res.exit_code not in (0, 1) or not summary:
                    raise RuntimeError(f"liverseg-infer exited {res.exit_code}: {res.message}")
                shutil.rmtree(out, ignore_errors=True)
                # Time outside the streamed pipeline (listing, opening the model, summary, report.html).
                if summary.get("images_per_second"):
                    summary["_fixed_overhead_s"] = wall - summary.get("n_ok", n) / summary["images_per_second"]
                return summary.get("n_ok", n) / wall, summary

            try:
                if r % 2 == 0:
                    m = model_only()
                    e, s = end_to_end()
                else:
                    e, s = end_to_end()
                    m = model_only()
            except Exception as ex:
                row["error"] = _err(ex)
                log(f"  e2e {name}: {row['error']}")
                break
            model_rates.append(m)
            e2e_rates.append(e)
            ratios.append(e / m)
            summaries.append(s)
            log(f"  e2e {name} round {r + 1}: model only {m:.2f} img/s, end to end {e:.2f} img/s ({100 * e / m:.1f}%)")
        sess = None
        if not ratios:
            continue
        last = summaries[-1]
        row.update(
            rounds=len(ratios),
            model_only_images_per_s=float(np.median(model_rates)),
            e2e_images_per_s=float(np.median(e2e_rates)),
            e2e_vs_model=float(np.median(ratios)),
            runner_images_per_s=float(np.median([s.get("images_per_second") or np.nan for s in summaries])),
            runner_model_images_per_s=float(np.median([s.get("model_images_per_second") or np.nan for s in summaries])),
            runner_pipeline_efficiency=last.get("pipeline_efficiency"),
            n_failed=last.get("n_failed"),
            fixed_overhead_s=float(np.median([s.get("_fixed_overhead_s", np.nan) for s in summaries])),
        )
        metrics = last.get("metrics") or {}
        dice = (metrics.get("macro") or {}).get("dice")
        row["dice"] = dice
        if name == "ort-fp32":
            dice_fp32 = dice
        elif dice is not None and dice_fp32 is not None:
            row["dice_delta_vs_fp32"] = dice - dice_fp32
    return rows
