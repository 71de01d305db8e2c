"""``liverseg-train``, ``liverseg-eval``, ``liverseg-predict`` and ``liverseg-import-study``.

Exit codes (the one table of :mod:`liverseg.core.errors`): 0 done; 2 a usage error, or a
bad config, data file, checkpoint or device: one ``error:`` line that names the key, the
file and CSV row, no traceback; 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import click

from liverseg.core.cli import command, device_name, out_option
from liverseg.core.errors import UsageError
from liverseg.core.files import write_text_atomic
from liverseg.core.images import Sample, discover
from liverseg.core.metrics import EMPTY_RULES
from liverseg.models.study import STUDY_MODELS, import_study, load_model_file
from liverseg.trainer.config import TrainConfig, parse_override
from liverseg.trainer.study import is_study_config

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N; a requested CUDA device that is absent is an error"


def _console_warnings() -> None:
    """Warnings (not the epoch lines, which train prints itself) reach the console."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


@command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder that relative image paths in the CSVs resolve against first (default: the config's "
    "data_root, else the current directory, as the study ran).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (the value is read as JSON when it parses), e.g. --set epochs=1 "
    "--set image_size=[256,256] --set augment=true. Repeatable.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or epoch lines (train.log still has them).")
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Train with N processes on this machine (DistributedDataParallel: one per GPU, or N CPU processes "
    "over gloo), through torch's launcher: the same as torchrun --standalone --nproc-per-node N "
    "-m liverseg.trainer CONFIG. train_batch_size stays the global batch.",
)
def train_main(
    config: Path, data_root: Path | None, overrides: tuple[str, ...], quiet: bool, nproc_per_node: int | None
) -> None:
    """Train a model from the study's JSON CONFIG (its keys verbatim, plus optional ones)."""
    from liverseg.trainer.train import train

    if nproc_per_node is not None:
        _launch(nproc_per_node, config, data_root, overrides, quiet)
    _console_warnings()
    kind = is_study_config(config)
    if kind is not None and "model_path" in config.read_text(encoding="utf-8", errors="replace"):
        runner = "liverseg-eval" if kind == "test" else "liverseg-predict"
        raise UsageError(f"{config} is the study's {kind} config, not a training config: run {runner} {config}")
    extra = dict(parse_override(o) for o in overrides)
    cfg = TrainConfig.from_json(config, overrides=extra)
    result = train(cfg, data_root=data_root, progress=not quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 says it
        return
    click.echo(f"run folder: {result.run_dir}")
    if result.best is not None:
        click.echo(f"best checkpoint: {result.best}")


def _launch(n: int, config: Path, data_root: Path | None, overrides: tuple[str, ...], quiet: bool) -> NoReturn:
    """Run this training in ``n`` processes through torch's launcher (torchrun) and exit with its code."""
    if "LOCAL_RANK" in os.environ:
        raise UsageError("--nproc-per-node inside a torchrun process; launch liverseg-train once, or torchrun alone")
    args = [str(config), *(["--data-root", str(data_root)] if data_root else [])]
    args += [a for o in overrides for a in ("--set", o)] + (["--quiet"] if quiet else [])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
    sys.exit(subprocess.call([*cmd, "-m", "liverseg.trainer", *args]))


def _samples(x: Path, y: Path | None, data_root: Path | None) -> list[Sample]:
    return discover(x, labels=y, root=data_root, need_labels=True)


@command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--x",
    "x",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Images: a study *_x.csv (its *_y.csv partner is found), a pairs CSV (X,Y) or a folder. "
    "Required unless CHECKPOINT is the study's test config.",
)
@click.option(
    "--y",
    "y",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Masks: a *_y.csv or a folder, when --x does not lead to them.",
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder that relative paths in the CSVs resolve against first (default: current directory).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--device", default="auto", show_default=True, callback=device_name, help=DEVICE_HELP)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics, per-image scores and checkpoint details to this JSON file.",
)
@click.option(
    "--study-semantics",
    is_flag=True,
    help="Also compute mPA and mIoU as the study's code did (BatchNorm on each batch's statistics, one "
    "confusion matrix per batch, 0/0 = NaN) and print them beside the eval-mode numbers.",
)
@click.option(
    "--empty-masks",
    type=click.Choice(EMPTY_RULES),
    default="rule",
    show_default=True,
    help="0/0 ratios: rule = 1 when nothing could be got wrong, else 0; nan = NaN, the image left out of "
    "that metric's mean (nnU-Net's convention).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def eval_main(
    checkpoint: Path,
    x: Path | None,
    y: Path | None,
    data_root: Path | None,
    batch_size: int,
    device: str,
    json_out: Path | None,
    study_semantics: bool,
    empty_masks: str,
    quiet: bool,
) -> None:
    """Test metrics of a CHECKPOINT (liverseg's, or a study .pth) per image, then averaged.

    CHECKPOINT may also be the study's configs/test_config.json: it runs as the study's
    `python main.py test` did (its semantics, test_output/metric_values.csv) and prints the
    eval-mode numbers beside its own.
    """
    from liverseg.trainer.evaluate import checkpoint_info, evaluate, evaluate_study, format_study, format_table
    from liverseg.trainer.train import resolve_device

    if is_study_config(checkpoint) == "test":
        _run_study_test(checkpoint, x, quiet)
        return
    if is_study_config(checkpoint) == "pred":
        raise UsageError(f"{checkpoint} is the study's predict config: run liverseg-predict {checkpoint}")
    if x is None:
        raise click.UsageError("--x is required (the test images), unless CHECKPOINT is the study's test config")
    dev = resolve_device(device)  # DeviceError (exit 2) when a requested CUDA device is absent
    ckpt = load_model_file(checkpoint)
    samples = _samples(x, y, data_root)
    result = evaluate(ckpt, samples, device=str(dev), batch_size=batch_size, progress=not quiet, empty=empty_masks)
    click.echo(f"{checkpoint} on {x} ({len(samples)} slices, threshold {ckpt.threshold}, device {dev})")
    click.echo(format_table(result))
    study = None
    if study_semantics:
        study = evaluate_study(ckpt, samples, device=str(dev), batch_size=batch_size, progress=not quiet)
        click.echo(f"study semantics (batch size {batch_size}):")
        click.echo(format_study(study, result))
    if json_out is not None:
        doc = {
            "checkpoint": checkpoint_info(ckpt),
            "data": {"x": str(x), "y": str(y) if y else None, "data_root": str(data_root) if data_root else None},
            "device": str(dev),
            **result,
            **({"study_semantics": study} if study is not None else {}),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n")
        click.echo(f"wrote {json_out}")


def _run_study_test(config: Path, x: Path | None, quiet: bool) -> None:
    from liverseg.trainer.evaluate import format_study, format_table
    from liverseg.trainer.study import StudyTestConfig, run_test_config

    if x is not None:
        raise click.UsageError("--x does not go with the study's test config (it names its data itself)")
    cfg = StudyTestConfig.from_json(config)
    doc = run_test_config(cfg, config, progress=not quiet)
    click.echo(f"{config}: {cfg.model_path} on {cfg.data_x_path} (the study's semantics, as its main.py test)")
    click.echo(format_study(doc["study_semantics"], doc["eval_mode"]))
    click.echo("eval mode, per image:")
    click.echo(format_table(doc["eval_mode"]))
    for path in doc["written"]:
        click.echo(f"wrote {path}")


@command()
@click.argument("study_pth", metavar="FILE.pth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", type=click.Choice(STUDY_MODELS), required=True, help="The study's model the file holds.")
@out_option(
    "output",
    ["--output"],
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The liverseg checkpoint.",
)
def import_study_main(study_pth: Path, model: str, output: Path) -> None:
    """Turn the study's trained_model.pth (a plain state dict) into a self-describing liverseg checkpoint."""
    ckpt = import_study(study_pth, model=model)
    ckpt.save(output)
    n = sum(v.numel() for k, v in ckpt.state_dict.items() if not k.endswith("num_batches_tracked"))
    how = ckpt.config["imported_from"]["conversion"]
    click.echo(f"{study_pth}: the study's {model}, {ckpt.model_args}; {n:,} values; {how}")
    click.echo(f"wrote {output} (preprocessing /255, threshold {ckpt.threshold}); eval, export and inference take it")


@command()
@click.argument(
    "source", metavar="IMAGE|PRED_CONFIG.json", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-m",
    "--model",
    "model_file",
    type=str,
    default=None,
    metavar="FILE|latest|reference",
    help="A liverseg checkpoint, a study .pth or an exported .onnx model (not with a config); 'latest': the newest "
    "runs/*/export/model.onnx; default: the reference model shipped with liverseg (said so).",
)
@out_option("output", ["--output"], type=click.Path(dir_okay=False, path_type=Path), help="Mask PNG (0/255).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=None, help="Default: the model's.")
@click.option("--study-semantics", is_flag=True, help="BatchNorm on this image's statistics, as the study's pred ran.")
@click.option("--device", default="auto", show_default=True, callback=device_name, help=DEVICE_HELP)
def predict_main(
    source: Path,
    model_file: str | None,
    output: Path | None,
    threshold: float | None,
    study_semantics: bool,
    device: str,
) -> None:
    """One slice's liver mask (0/255 PNG), from an IMAGE and --model, or from the study's pred_config.json."""
    from liverseg.trainer.study import StudyPredConfig, is_study_config, run_pred_config

    if is_study_config(source) is not None:
        if model_file is not None or output is not None:
            raise click.UsageError("--model and --output do not go with the study's predict config (it names both)")
        cfg = StudyPredConfig.from_json(source)
        res = run_pred_config(cfg)
        click.echo(
            f"wrote {res['written']}: {res['liver_pixels']} liver pixels (the study's semantics, as its main.py pred)"
        )
        click.echo(
            f"eval mode gives {res['liver_pixels_eval_mode']} ({res['pixels_differing']} pixels differ): "
            "the study never put the model in eval mode, so BatchNorm used this image's statistics"
        )
        return
    if output is None:
        raise click.UsageError("give --output with an image (or the study's pred_config.json alone)")
    from liverseg.reference import checkpoint_path, resolve_model
    from liverseg.trainer.predict import predict_file

    if model_file is None and study_semantics:  # train-mode BatchNorm needs the network: the shipped checkpoint
        found, how = checkpoint_path(), "the reference model shipped with liverseg (its checkpoint)"
    else:
        found, how = resolve_model(model_file, [Path("runs")])
    if found is None or not found.is_file():
        raise click.UsageError(f"no model: {how if found is None else f'--model {found}: no such file'}")
    if model_file is None or model_file in ("latest", "reference"):
        click.echo(f"model: {found} ({how})", err=True)
    res = predict_file(source, found, output, threshold=threshold, study=study_semantics, device=device)
    click.echo(f"wrote {res['written']}: {res['liver_pixels']} liver pixels ({res['how']})")


if __name__ == "__main__":  # python -m liverseg.trainer.cli CONFIG.json
    train_main()
