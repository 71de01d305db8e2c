"""``liverseg-train`` and ``liverseg-eval``.

Exit codes (the one table of :mod:`liverseg.core.errors`): 0 done; 2 a usage error, or a
bad config, data file, checkpoint or device: one ``error:`` line that names the key, the
file and CSV row, no traceback; 130 interrupted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from liverseg.core.cli import command
from liverseg.core.data import Sample, discover
from liverseg.core.io import write_text_atomic
from liverseg.models.checkpoint import load_checkpoint
from liverseg.trainer.config import DEVICE_RE, TrainConfig, parse_override

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N; a requested CUDA device that is absent is an error"


def _console_warnings() -> None:
    """Warnings (not the epoch lines, which train prints itself) reach the console."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def _device_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A device name that is not one is a usage error; an absent device is a DeviceError later."""
    if not DEVICE_RE.match(value):
        raise click.BadParameter(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


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
def train_main(config: Path, data_root: Path | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Train a model from the study's JSON CONFIG (its keys verbatim, plus optional ones)."""
    from liverseg.trainer.train import train

    _console_warnings()
    extra = dict(parse_override(o) for o in overrides)
    cfg = TrainConfig.from_json(config, overrides=extra)
    result = train(cfg, data_root=data_root, progress=not quiet)
    click.echo(f"run folder: {result.run_dir}")
    if result.best is not None:
        click.echo(f"best checkpoint: {result.best}")


def _samples(x: Path, y: Path | None, data_root: Path | None) -> list[Sample]:
    return discover(x, labels=y, root=data_root, need_labels=True)


@command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--x",
    "x",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Images: a study *_x.csv (its *_y.csv partner is found), a pairs CSV (X,Y) or a folder.",
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
@click.option("--device", default="auto", show_default=True, callback=_device_name, help=DEVICE_HELP)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics, per-image scores and checkpoint details to this JSON file.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def eval_main(
    checkpoint: Path,
    x: Path,
    y: Path | None,
    data_root: Path | None,
    batch_size: int,
    device: str,
    json_out: Path | None,
    quiet: bool,
) -> None:
    """Test metrics of a CHECKPOINT as the study's test mode computed them (per image, then averaged)."""
    from liverseg.trainer.evaluate import checkpoint_info, evaluate, format_table
    from liverseg.trainer.train import resolve_device

    dev = resolve_device(device)  # DeviceError (exit 2) when a requested CUDA device is absent
    ckpt = load_checkpoint(checkpoint)
    samples = _samples(x, y, data_root)
    result = evaluate(ckpt, samples, device=str(dev), batch_size=batch_size, progress=not quiet)
    click.echo(f"{checkpoint} on {x} ({len(samples)} slices, threshold {ckpt.threshold}, device {dev})")
    click.echo(format_table(result))
    if json_out is not None:
        doc = {
            "checkpoint": checkpoint_info(ckpt),
            "data": {"x": str(x), "y": str(y) if y else None, "data_root": str(data_root) if data_root else None},
            "device": str(dev),
            **result,
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n")
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":  # python -m liverseg.trainer.cli CONFIG.json
    train_main()
