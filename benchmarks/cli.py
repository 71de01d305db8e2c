"""``liverseg-bench``: every backend side by side, against the machine's measured peak.

Examples::

    liverseg-bench --quick                                   # smoke run: tiny model, small images
    liverseg-bench --case 16:256,512:1,4,8 --case 64:512:1   # the full CPU run (benchmarks/README.md)
    liverseg-bench --checkpoint runs/X/checkpoints/best.pt --sizes 512 --batches 1

Results go to ``--out`` (``runs/bench/`` under the current folder by default):
``bench-<date>.{csv,md,png,json}`` and ``latest.md``. Nothing is written into the
installed package.

Exit codes: 0 every row measured, 1 some rows recorded an error, 2 usage error or a bad
checkpoint (reported before any measurement).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from liverseg.benchmarks.backends import BACKENDS
from liverseg.benchmarks.bench import Bench, BenchOptions, Case
from liverseg.core.cli import command, raw_argv
from liverseg.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from liverseg.core.files import ensure_writable_dir

DEFAULT_OUT = Path("runs/bench")  # relative to the current folder


def _ints(value: str, name: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=name) from None
    if any(v < 1 for v in out):
        raise click.BadParameter(f"values must be >= 1, got {value!r}", param_hint=name)
    return out


def parse_case(spec: str) -> list[Case]:
    """``WIDTH:SIZES:BATCHES`` (e.g. ``16:256,512:1,4,8``) -> cases."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise click.BadParameter(
            f"expected WIDTH:SIZES:BATCHES such as 16:256,512:1,4,8, got {spec!r}", param_hint="--case"
        )
    ws, ss, bs = (_ints(p, "--case") for p in parts)
    return [Case(w, s, b) for w in ws for s in ss for b in bs]


def set_wait_policy(spinning: bool) -> str:
    """Match torch's OpenMP idle policy to ORT's spinning setting; must run before torch is imported.

    Measured on the 2-core machine under load (other jobs running): a width-4 U-Net at
    64x64 took 1.2-2.0 s per call in eager with 2 OpenMP threads and the default
    (active, spinning) wait policy, 18-33 ms with ``OMP_WAIT_POLICY=PASSIVE`` -- the
    spinning thread burns the time slice its partner needs. ORT's
    ``allow_spinning=0`` is the same choice, so both engines get it together. An
    ``OMP_WAIT_POLICY`` already in the environment is kept.
    """
    if "OMP_WAIT_POLICY" not in os.environ and not spinning:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    policy = os.environ.get("OMP_WAIT_POLICY", "default (active)")
    if "torch" in sys.modules:
        policy += " (torch was imported before it was set: not applied in this process)"
    os.environ["LIVERSEG_BENCH_OMP_POLICY"] = policy
    return policy


@command()
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A trained checkpoint (its model and width). Default: random weights of --model at each width.",
)
@click.option("-m", "--model", type=click.Choice(["unet", "baseline"]), default="unet", show_default=True)
@click.option("--widths", default="16", show_default=True, help="Comma-separated model widths (without --case).")
@click.option("--sizes", default="256,512", show_default=True, help="Comma-separated square image sizes.")
@click.option("--batches", default="1,4,8", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--case", "case_specs", multiple=True, help="WIDTH:SIZES:BATCHES, repeatable; replaces --widths/--sizes/--batches."
)
@click.option(
    "--backends",
    default=None,
    help=f"Comma-separated rows. Default: the CPU rows, plus the GPU rows when CUDA is "
    f"present. Valid: {', '.join(BACKENDS)}.",
)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Timed rounds per case.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed calls per backend and case."
)
@click.option(
    "--max-case-seconds", type=float, default=None, help="Stop a case's rounds after this long (at least 3 rounds)."
)
@click.option(
    "--budget-s",
    type=float,
    default=None,
    help="Model matrix time budget: every case and memory probe that would start after this many seconds is "
    "recorded as skipped (cases run in the order given: put the most important --case first). The "
    "end-to-end and scaling sections always run; --e2e-slices and --scaling bound them.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for torch and onnxruntime. Default: usable cores.",
)
@click.option(
    "--spinning/--no-spinning",
    default=False,
    show_default=True,
    help="Let idle worker threads spin: onnxruntime allow_spinning=1 and torch's OpenMP default (active) "
    "wait policy. Off: ORT allow_spinning=0 and OMP_WAIT_POLICY=PASSIVE, so no backend's idle threads "
    "steal the cores of the next one on a shared machine.",
)
@click.option("--memory/--no-memory", default=True, show_default=True, help="Peak RSS per backend in a subprocess.")
@click.option(
    "--e2e/--no-e2e", default=True, show_default=True, help="liverseg-infer end to end vs model only on real slices."
)
@click.option(
    "--e2e-width",
    type=int,
    default=None,
    help="Width for the end-to-end rows. Default: the smallest width of the cases.",
)
@click.option(
    "--e2e-slices", type=click.IntRange(min=1), default=None, help="Only the first N real slices. Default: all 78."
)
@click.option(
    "--e2e-repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="List the real slices N times under different names: a longer run, where the run's fixed cost "
    "(opening the model, report.html) weighs as on a real batch.",
)
@click.option("--e2e-rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--e2e-batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size of the end-to-end rows."
)
@click.option(
    "--e2e-backends",
    default="auto,ort-fp32,ort-int8",
    show_default=True,
    help="Comma-separated rows for the end-to-end section: ONNX Runtime (ort-cuda-* run the runner on CUDA), "
    "OpenVINO (ov-*), and auto (liverseg-infer's defaults).",
)
@click.option(
    "--gate-slices",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Before the end-to-end rows, judge the export's engines and precisions on this many labelled 512x512 "
    "slices (as liverseg-export --validation does), so the auto row runs what liverseg-infer would choose; "
    "0: no gates, auto keeps fp32.",
)
@click.option(
    "--scaling", default="100,1000,10000", show_default=True, help="Input counts for the scaling rows ('' to skip)."
)
@click.option("--scaling-width", type=int, default=4, show_default=True)
@click.option("--scaling-size", type=int, default=64, show_default=True)
@click.option(
    "--peak-n", type=click.IntRange(min=64), default=4096, show_default=True, help="Matrix size of the peak matmul."
)
@click.option(
    "--calibration-slices", type=click.IntRange(min=1), default=16, show_default=True, help="int8 calibration slices."
)
@click.option("--synthetic", is_flag=True, help="Synthetic slices even when ../shared/data is there.")
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The shared data folder. Default: ../shared/data beside the checkout (or $LIVERSEG_SHARED_DATA).",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write onnxruntime profiler JSON for the ORT rows into this folder.",
)
@click.option(
    "--quick", is_flag=True, help="Smoke run: width 4, 64/128 px, batch 1/2, 2 rounds, small peak, 2 scaling counts."
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Results folder, relative to the current folder.",
)
def main(**kw: Any) -> None:
    """Measure every backend side by side, interleaved round by round, against the machine's fp32 peak."""
    set_wait_policy(kw["spinning"])
    from liverseg.benchmarks.report import check_targets, write_results

    bench = Bench(options_from(kw), argv=raw_argv("liverseg-bench"))
    bench.preflight()  # a bad checkpoint or option combination: exit 2 before any measurement or output
    out = ensure_writable_dir(kw["out"], UsageError)
    if bench.o.profile_dir:
        ensure_writable_dir(bench.o.profile_dir, UsageError)
    result = bench.run()
    paths = write_results(result, out)
    for t in check_targets(result):
        verdict = "n/a   " if t["met"] is None else "met   " if t["met"] else "MISSED"
        click.echo(f"{verdict} {t['target']}: {t['value']:.3f} ({t['detail']})")
    click.echo("\n".join(f"wrote {k}: {p}" for k, p in paths.items()))
    failed = [r for r in (*result["rows"], *result["e2e"], *result["scaling"]) if r.get("error")]
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _names(value: str | None, option: str, also: tuple[str, ...] = ()) -> list[str] | None:
    """Comma-separated backend names, each checked against the registry (or ``also``); None for none given."""
    if not value:
        return None
    names = [b.strip() for b in value.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS and b not in also]
    if bad:
        raise click.BadParameter(f"unknown backend(s) {bad}; valid: {', '.join(BACKENDS)}", param_hint=option)
    return names


def options_from(kw: dict[str, Any]) -> BenchOptions:
    """The command's options as :class:`BenchOptions`, ``--quick`` applied; bad values raise ``BadParameter``."""
    if kw["quick"]:
        kw.update(widths="4", sizes="64,128", batches="1,2", e2e_rounds=1, e2e_slices=kw["e2e_slices"] or 4)
        kw.update(rounds=min(kw["rounds"], 2), peak_n=min(kw["peak_n"], 1024))
        kw["calibration_slices"] = min(kw["calibration_slices"], 4)
        kw["scaling"] = "20,60" if kw["scaling"] == "100,1000,10000" else kw["scaling"]
    if kw["case_specs"]:
        cases = [c for spec in kw["case_specs"] for c in parse_case(spec)]
    else:
        ws, ss, bs = (_ints(kw[k], f"--{k}") for k in ("widths", "sizes", "batches"))
        cases = [Case(w, s, b) for w in ws for s in ss for b in bs]
    scaling = kw["scaling"]
    return BenchOptions(
        model=kw["model"],
        cases=cases,
        checkpoint=kw["checkpoint"],
        backends=_names(kw["backends"], "--backends"),
        rounds=kw["rounds"],
        warmup=kw["warmup"],
        max_case_seconds=kw["max_case_seconds"],
        budget_s=kw["budget_s"],
        threads=kw["threads"],
        spinning=kw["spinning"],
        memory=kw["memory"],
        peak_n=kw["peak_n"],
        calibration_slices=kw["calibration_slices"],
        real_data=not kw["synthetic"],
        data_dir=kw["data_dir"],
        e2e=kw["e2e"],
        e2e_width=kw["e2e_width"],
        e2e_slices=kw["e2e_slices"],
        e2e_rounds=kw["e2e_rounds"],
        e2e_batch=kw["e2e_batch"],
        e2e_repeat=kw["e2e_repeat"],
        e2e_backends=tuple(_names(kw["e2e_backends"], "--e2e-backends", also=("auto",)) or ()),
        gate_slices=kw["gate_slices"],
        scaling=tuple(_ints(scaling, "--scaling")) if scaling.strip() else (),
        scaling_width=kw["scaling_width"],
        scaling_size=kw["scaling_size"],
        profile_dir=kw["profile_dir"],
    )


if __name__ == "__main__":
    main()
