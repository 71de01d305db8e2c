"""``liverseg-demo``: the whole pipeline on synthetic CT, self-contained, in a few minutes on a CPU.

The demo is an ordered list of stages. Each stage is a function ``(ctx) -> None``
that reads what earlier stages left in the :class:`DemoContext` (or, when run alone
with ``--stages``, finds it in the run folder) and adds its own results. The runner
prints a header and the wall time of every stage and writes ``demo.json``.

The stages, in order (:data:`STAGES`):

1. ``data``: synthesize slices of a few patients (:mod:`liverseg.apps.synthetic`) in the
   study's layout: ``<run>/synthetic/data/Images``, ``Labels``, ``data_pairs.csv``,
   ``manifest.csv`` (with a ``patient`` column);
2. ``split``: train/val/test grouped by patient, with ``liverseg-split``'s library
   functions, into the study's ``*_x.csv``/``*_y.csv`` lists in ``<run>/splits``;
3. ``eda``: the data summary of the three splits (:func:`liverseg.apps.eda.run_eda`):
   liver-pixel histograms, mean and std per split, ``<run>/eda/eda.html``;
4. ``train``: write ``<run>/config.json`` in the study's format and train a small
   U-Net with :func:`liverseg.trainer.train.train` (run folder ``<run>/runs/unet-w*``);
5. ``evaluate``: the study's test mode on the test split
   (:func:`liverseg.trainer.evaluate.evaluate`); prints the metric table and writes
   ``<run>/metrics.json``;
6. ``export``: ``liverseg-export`` of the best checkpoint to TorchScript, ONNX fp32
   and int8 with measured parity, into ``<run>/export``;
7. ``infer``: ``liverseg-infer`` with ``<run>/export/model.onnx`` on the test split:
   masks, overlays and the run report in ``<run>/infer``;
8. ``bench``: ``liverseg-bench`` (in a fresh interpreter, ``python -m liverseg.benchmarks``)
   of eager, ONNX Runtime fp32 and int8 on the demo model, into ``<run>/bench``.

Exit codes: 0 every stage ran; 1 a stage failed (``error: <why>``, e.g. what it needs
from an earlier stage is missing, or its input data is bad); 2 a bad option, an
unusable run folder or a requested CUDA device that torch (or, for 'infer', ONNX
Runtime) cannot use, checked before the first stage; 130 interrupted.

Extending: write ``def stage_report(ctx: DemoContext) -> None`` and add it with
``register_stage(Stage("report", stage_report, "..."), after="infer")`` (or edit
:data:`STAGES`). Put results in ``ctx.results[name]`` (JSON types: they land in
``demo.json``) and files under ``ctx.run_dir``; use :meth:`DemoContext.checkpoint_path`
and friends to find earlier outputs when run alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import command
from liverseg.core.errors import EXIT_FAILED, DeviceError, LiversegError, UsageError
from liverseg.core.files import versions, write_text_atomic

DEFAULT_RUN_DIR = Path("runs/demo")


class DemoError(LiversegError):
    """A stage cannot run or failed (e.g. what it needs from an earlier stage is missing): exit 1."""

    exit_code = EXIT_FAILED


@dataclass
class DemoSettings:
    """Sizes of the demo; ``quick()`` is the test-suite version (seconds, not minutes)."""

    n_slices: int = 160
    slices_per_patient: int = 8
    size: int = 128
    width: int = 8
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    loss: str = "bce+dice"
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"

    @classmethod
    def quick(cls, **kw: Any) -> DemoSettings:
        base: dict[str, Any] = dict(n_slices=24, slices_per_patient=4, size=64, width=4, epochs=1, batch_size=4)
        base.update(kw)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DemoContext:
    """What the stages share. Paths of earlier outputs are found in ``run_dir`` when unset."""

    run_dir: Path
    settings: DemoSettings
    progress: bool = True
    echo: Callable[[str], None] = click.echo
    data_root: Path | None = None  # the folder that holds data/ (relative CSV entries resolve here)
    manifest: Path | None = None
    split_dir: Path | None = None
    config_path: Path | None = None
    train_run: Path | None = None
    checkpoint: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # -- locating earlier outputs (so a stage can run alone with --stages)

    def synthetic_root(self) -> Path:
        root = self.data_root or self.run_dir / "synthetic"
        if not (root / "data" / "manifest.csv").exists():
            raise DemoError(f"no synthetic data in {root} (run the 'data' stage first)")
        return root

    def splits(self) -> Path:
        d = self.split_dir or self.run_dir / "splits"
        if not (d / "train_x.csv").exists():
            raise DemoError(f"no split lists in {d} (run the 'split' stage first)")
        return d

    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        from liverseg.models.checkpoint import latest_run_checkpoint

        found = latest_run_checkpoint(self.run_dir / "runs")
        if found is None:
            raise DemoError(f"no checkpoint under {self.run_dir / 'runs'} (run the 'train' stage first)")
        return found


@dataclass(frozen=True)
class Stage:
    """One step of the demo: ``run(ctx)`` does the work and prints what it found."""

    name: str
    run: Callable[[DemoContext], None]
    help: str = ""


# ---------------------------------------------------------------- stages


def stage_data(ctx: DemoContext) -> None:
    """Synthetic slices in the study's layout, consecutive slices per patient."""
    from liverseg.apps.synthetic import write_dataset

    s = ctx.settings
    root = ctx.run_dir / "synthetic"
    if root.exists():
        shutil.rmtree(root)
    info = write_dataset(
        root,
        s.n_slices,
        size=(s.size, s.size),
        seed=s.seed,
        layout="study",
        slices_per_patient=s.slices_per_patient,
        progress=ctx.progress,
    )
    ctx.data_root = root
    ctx.manifest = info["info"].manifest
    summary = {k: v for k, v in info.items() if k != "info"}
    ctx.results["data"] = summary
    ctx.echo(
        f"{summary['n']} slices {s.size}x{s.size} of {summary['n_patients']} synthetic patients "
        f"({summary['n_empty']} without liver) in {root / 'data'}"
    )


def stage_split(ctx: DemoContext) -> None:
    """Train/val/test grouped by patient, in the study's *_x.csv / *_y.csv format."""
    from liverseg.trainer.split import load_source, split_indices, write_split

    s = ctx.settings
    root = ctx.synthetic_root()
    manifest = ctx.manifest or root / "data" / "manifest.csv"
    samples, groups = load_source(manifest, root=root, group_by="patient")
    if groups is None:
        raise DemoError(f"{manifest}: no patient column")
    parts = split_indices(len(samples), groups, s.test_fraction, s.val_fraction, s.seed)
    if not all(parts[k] for k in ("train", "val", "test")):
        raise DemoError(f"a split is empty ({ {k: len(v) for k, v in parts.items()} }); use more slices or patients")
    out = ctx.run_dir / "splits"
    info = {
        "source": str(manifest),
        "seed": s.seed,
        "test_fraction": s.test_fraction,
        "val_fraction": s.val_fraction,
        "group_by": "patient",
        "group_pattern": None,
    }
    write_split(samples, parts, out, output_root=root, groups=groups, info=info)
    ctx.split_dir = out
    by_split = {k: {"slices": len(v), "patients": len({groups[i] for i in v})} for k, v in parts.items()}
    ctx.results["split"] = by_split
    ctx.echo(
        "  ".join(f"{k}: {v['slices']} slices / {v['patients']} patients" for k, v in by_split.items()) + f"  -> {out}"
    )


def demo_config(ctx: DemoContext) -> dict[str, Any]:
    """The training config in the study's JSON format (its keys first), absolute paths."""
    s = ctx.settings
    splits = ctx.splits().resolve()
    return {
        "model": "unet",
        "in_dim": 1,
        "out_dim": 1,
        "out_activation": "sigmoid",
        "tdata_x_path": str(splits / "train_x.csv"),
        "tdata_y_path": str(splits / "train_y.csv"),
        "vdata_x_path": str(splits / "val_x.csv"),
        "vdata_y_path": str(splits / "val_y.csv"),
        "lr": s.lr,
        "optim": "adam",
        "loss": s.loss,
        "train_batch_size": s.batch_size,
        "valid_batch_size": s.batch_size,
        "epochs": s.epochs,
        "val_metrics": ["mPA", "mIoU"],
        "save_model": True,
        "seed": s.seed,
        "num_workers": 0,
        "width": s.width,
        "device": s.device,
        "output_dir": str((ctx.run_dir / "runs").resolve()),
        "data_root": str(ctx.synthetic_root().resolve()),
        "augment": False,
        "keep_best": "dice",
    }


def stage_train(ctx: DemoContext) -> None:
    """Write config.json (the study's format) and train a small U-Net from it."""
    from liverseg.trainer.config import TrainConfig
    from liverseg.trainer.train import train

    cfg_path = ctx.run_dir / "config.json"
    write_text_atomic(cfg_path, json.dumps(demo_config(ctx), indent=2) + "\n")
    cfg = TrainConfig.from_json(cfg_path)  # exactly what `liverseg-train <run>/config.json` would do
    ctx.config_path = cfg_path
    ctx.echo(
        f"config {cfg_path}: unet width {cfg.model_width}, {cfg.epochs} epoch(s), lr {cfg.lr}, "
        f"loss {cfg.loss}, batch {cfg.train_batch_size}, device {cfg.device}"
    )
    result = train(cfg, progress=ctx.progress)
    ctx.train_run = result.run_dir
    ctx.checkpoint = result.best
    last = result.history[-1] if result.history else {}
    ctx.results["train"] = {
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.best) if result.best else None,
        "epochs": len(result.history),
        "best": result.best_info,
        "last": {k: last[k] for k in ("train_loss", "val_loss", "dice", "mPA", "mIoU") if k in last},
    }
    ctx.echo(f"run folder {result.run_dir}; best {result.best_info}")


def stage_evaluate(ctx: DemoContext) -> None:
    """The study's test mode on the held-out patients; prints the metric table."""
    from liverseg.core.images import discover
    from liverseg.trainer.evaluate import evaluate, format_table

    splits = ctx.splits()
    samples = discover(splits / "test_x.csv", root=ctx.synthetic_root(), need_labels=True)
    ckpt = ctx.checkpoint_path()
    result = evaluate(ckpt, samples, device=ctx.settings.device, progress=ctx.progress)
    metrics = {k: v for k, v in result.items() if k != "per_image"}
    write_text_atomic(ctx.run_dir / "metrics.json", json.dumps({"checkpoint": str(ckpt), **result}, indent=2) + "\n")
    ctx.results["evaluate"] = {"checkpoint": str(ckpt), **metrics}
    ctx.echo(f"test split: {len(samples)} slices, checkpoint {ckpt}")
    ctx.echo(format_table(result))


def _run_cli(ctx: DemoContext, cmd: click.Command, args: list[str], name: str) -> int:
    """Run a liverseg click command exactly as a user would type it; returns its exit code."""
    ctx.echo("$ " + name + " " + " ".join(args))
    try:
        cmd.main(args=args, prog_name=name, standalone_mode=False)
    except SystemExit as e:  # commands that own their exit code (0 all good, 1 some inputs failed)
        return int(e.code or 0)
    except click.ClickException as e:
        raise DemoError(f"{name}: {e.format_message()}") from None
    return 0


def stage_eda(ctx: DemoContext) -> None:
    """The study's Figures 1-5: liver-pixel % per split, mean and std per split."""
    from liverseg.apps.eda import run_eda

    s = ctx.splits()
    result = run_eda(
        [s / "train_x.csv", s / "val_x.csv", s / "test_x.csv"], ctx.run_dir / "eda", root=ctx.synthetic_root()
    )
    ctx.results["eda"] = {"html": str(result.out_dir / "eda.html"), "unreadable": len(result.errors)}
    ctx.echo(f"figures and summary in {result.out_dir} (open eda.html)")


def stage_export(ctx: DemoContext) -> None:
    """TorchScript + ONNX fp32 + int8 QDQ of the best checkpoint, with measured parity."""
    from liverseg.export.cli import main as export_main

    s = ctx.splits()
    out = ctx.run_dir / "export"
    size = ctx.settings.size
    args = [
        str(ctx.checkpoint_path()),
        "--format",
        "all",
        "--out",
        str(out),
        "--int8",
        "--calibration",
        str(s / "train_x.csv"),
        "--calibration-count",
        "16",
        "--validation",
        str(s / "val_x.csv"),
        "--validation-count",
        "16",
        "--data-root",
        str(ctx.synthetic_root()),
        "--export-shape",
        f"1x1x{size}x{size}",
        "--check-shape",
        f"3x1x{size + 16}x{size - 24}",
    ]
    rc = _run_cli(ctx, export_main, args, "liverseg-export")
    if rc != 0:
        raise DemoError(f"liverseg-export exited with {rc}; see {out / 'parity.json'}")
    parity = json.loads((out / "parity.json").read_text())
    ctx.results["export"] = {"out": str(out), "parity_ok": parity.get("ok")}


def stage_infer(ctx: DemoContext) -> None:
    """liverseg-infer on the test list: masks, overlays, per_image.csv, summary.json, report.html."""
    from liverseg.infer.cli import main as infer_main

    model = ctx.run_dir / "export" / "model.onnx"
    if not model.exists():
        raise DemoError(f"no {model} (run the 'export' stage first)")
    out = ctx.run_dir / "infer"
    if out.exists():
        shutil.rmtree(out)
    args = [
        str(ctx.splits() / "test_x.csv"),
        "--model",
        str(model),
        "--out",
        str(out),
        "--data-root",
        str(ctx.synthetic_root()),
        "--overlays",
        "--device",
        "cuda" if ctx.settings.device.startswith("cuda") else ctx.settings.device,
    ]
    if not ctx.progress:
        args.append("--no-progress")
    rc = _run_cli(ctx, infer_main, args, "liverseg-infer")
    summary = json.loads((out / "summary.json").read_text())
    ctx.results["infer"] = {
        "out": str(out),
        "exit_code": rc,
        "n_ok": summary.get("n_ok"),
        "n_failed": summary.get("n_failed"),
        "report": str(out / "report.html"),
    }
    if rc not in (0, 1):
        raise DemoError(f"liverseg-infer exited with {rc}")


def stage_bench(ctx: DemoContext) -> None:
    """A small side-by-side benchmark of the demo model: eager, ONNX Runtime fp32 and int8.

    ``liverseg-bench`` runs in a fresh interpreter (``python -m liverseg.benchmarks``):
    the benchmarks are the layer above the applications, and a fresh process lets them
    set the thread policy before torch loads, as they do from the command line.
    """
    size = ctx.settings.size
    args = [
        "--checkpoint",
        str(ctx.checkpoint_path()),
        "--case",
        f"{ctx.settings.width}:{size}:1",
        "--backends",
        "eager,ort-fp32,ort-int8",
        "--rounds",
        "3",
        "--no-memory",
        "--no-e2e",
        "--scaling",
        "",
        "--synthetic",
        "--peak-n",
        "1024",
        "--calibration-slices",
        "8",
        "--out",
        str(ctx.run_dir / "bench"),
    ]
    ctx.echo("$ liverseg-bench " + " ".join(args))
    rc = subprocess.run([sys.executable, "-m", "liverseg.benchmarks", *args], check=False).returncode
    ctx.results["bench"] = {"out": str(ctx.run_dir / "bench"), "exit_code": rc}


STAGES: list[Stage] = [
    Stage("data", stage_data, "synthesize CT-like slices with liver masks"),
    Stage("split", stage_split, "train/val/test lists grouped by patient"),
    Stage("eda", stage_eda, "liver-pixel % histograms and mean/std per split (the study's Figures 1-5)"),
    Stage("train", stage_train, "train a small U-Net from a study-format config"),
    Stage("evaluate", stage_evaluate, "metrics on the test split"),
    Stage("export", stage_export, "TorchScript, ONNX fp32 and int8 with measured parity"),
    Stage("infer", stage_infer, "batch inference on the test split: masks, overlays, report.html"),
    Stage("bench", stage_bench, "eager vs ONNX Runtime fp32 vs int8 on the demo model"),
]


def register_stage(stage: Stage, after: str | None = None) -> None:
    """Add a stage at the end, or right after the stage named ``after``; a name is used once."""
    names = [s.name for s in STAGES]
    if stage.name in names:
        raise UsageError(f"stage {stage.name!r} is already registered")
    if after is None:
        STAGES.append(stage)
    elif after in names:
        STAGES.insert(names.index(after) + 1, stage)
    else:
        raise UsageError(f"no stage {after!r}; stages: {', '.join(names)}")


def select_stages(spec: str | None) -> list[Stage]:
    """``None``/``"all"``: every stage; else a comma list of names, run in the demo's order."""
    if spec is None or spec.strip() in ("", "all"):
        return list(STAGES)
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    names = [s.name for s in STAGES]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names)}")
    return [s for s in STAGES if s.name in wanted]


def check_device(device: str, stages: list[Stage]) -> None:
    """A requested CUDA device that the stages cannot use is a DeviceError before any stage runs.

    torch must see the device (train and evaluate use it, checked as the trainer does) and,
    when the 'infer' stage runs, ONNX Runtime must have its CUDA execution provider.
    """
    if not device.startswith("cuda"):
        return
    from liverseg.trainer.train import resolve_device

    resolve_device(device)
    if any(s.name == "infer" for s in stages):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceError(
                f"--device {device}: the 'infer' stage needs ONNX Runtime's CUDA execution provider, but this "
                f"onnxruntime ({ort.__version__}) has only {available}; install onnxruntime-gpu or use --device cpu"
            )


def run_demo(
    run_dir: Path,
    settings: DemoSettings,
    stages: list[Stage] | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = click.echo,
) -> DemoContext:
    """Run the stages in order; each prints a header and its wall time. Writes ``demo.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(run_dir=run_dir, settings=settings, progress=progress, echo=echo)
    stages = list(STAGES) if stages is None else stages
    t_all = time.perf_counter()
    try:
        for i, stage in enumerate(stages, 1):
            echo(f"\n== [{i}/{len(stages)}] {stage.name}: {stage.help}")
            t0 = time.perf_counter()
            stage.run(ctx)
            ctx.timings[stage.name] = round(time.perf_counter() - t0, 3)
            echo(f"-- {stage.name} done in {ctx.timings[stage.name]:.1f} s")
    finally:
        total = round(time.perf_counter() - t_all, 3)
        v = versions()
        summary = {
            "run_dir": str(run_dir),
            "settings": settings.to_dict(),
            "stages": [s.name for s in stages],
            "timings_s": ctx.timings,
            "total_s": total,
            "results": ctx.results,
            "python": v["python"],
            "versions": v,
            "command": sys.argv,
        }
        write_text_atomic(run_dir / "demo.json", json.dumps(summary, indent=2, default=str) + "\n")
    echo(f"\ndemo finished in {total:.1f} s; summary in {run_dir / 'demo.json'}")
    return ctx


# ---------------------------------------------------------------- command line


@command()
@click.option(
    "-o",
    "--out",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_RUN_DIR,
    show_default=True,
    help="Run folder for everything the demo writes.",
)
@click.option(
    "--stages",
    default="all",
    show_default=True,
    help="Comma-separated stages to run (in the demo's order); see --list-stages.",
)
@click.option("--list-stages", is_flag=True, help="Print the stages and exit.")
@click.option("--quick", is_flag=True, help="Tiny sizes (24 slices 64x64, width 4, 1 epoch): a smoke test in seconds.")
@click.option(
    "--n-slices", type=click.IntRange(min=6), default=None, help="Number of synthetic slices [160; quick 24]."
)
@click.option(
    "--slices-per-patient", type=click.IntRange(min=1), default=None, help="Slices per synthetic patient [8]."
)
@click.option("--size", type=click.IntRange(min=32), default=None, help="Slice height and width in pixels [128].")
@click.option("--width", type=click.IntRange(min=1), default=None, help="U-Net base width [8; quick 4].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [12; quick 1].")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's choice, one per core). 1 is faster on a busy machine.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, split and training.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when present), cpu, cuda or cuda:N; an absent CUDA device is an error.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def main(
    run_dir: Path,
    stages: str,
    list_stages: bool,
    quick: bool,
    n_slices: int | None,
    slices_per_patient: int | None,
    size: int | None,
    width: int | None,
    epochs: int | None,
    threads: int | None,
    seed: int,
    device: str,
    quiet: bool,
) -> None:
    """Run liverseg end to end on synthetic CT: data, split by patient, EDA, train, evaluate, export, infer, bench.

    Exit code 0: every stage ran; 1: a stage failed (one error line says why); 2: a bad option.
    """
    if list_stages:
        for s in STAGES:
            click.echo(f"{s.name:<12} {s.help}")
        return
    try:
        selected = select_stages(stages)
    except UsageError as e:
        raise click.BadParameter(str(e), param_hint="--stages") from None
    from liverseg.trainer.config import DEVICE_RE

    if not DEVICE_RE.match(device):
        raise click.BadParameter(f"must be auto, cpu, cuda or cuda:N, got {device!r}", param_hint="--device")
    check_device(device, selected)  # DeviceError: exit 2 before the first stage, not in the fourth
    settings = DemoSettings.quick(seed=seed, device=device) if quick else DemoSettings(seed=seed, device=device)
    for key, value in (
        ("n_slices", n_slices),
        ("slices_per_patient", slices_per_patient),
        ("size", size),
        ("width", width),
        ("epochs", epochs),
    ):
        if value is not None:
            setattr(settings, key, value)
    import torch

    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        run_demo(run_dir, settings, selected, progress=not quiet)
    except DemoError:
        raise
    except LiversegError as e:  # bad data, config, checkpoint or device inside a stage: that stage failed
        raise DemoError(str(e)) from e
    finally:
        torch.set_num_threads(threads_before)


if __name__ == "__main__":
    main()
