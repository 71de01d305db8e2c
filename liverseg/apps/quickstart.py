"""``liverseg-quickstart``: the shipped reference model on a real CT, out of the box.

On a fresh machine only the package registries can be reached. One package on PyPI
ships a real CT with expert labels: the MIT-licensed ``liver-ct-segmentation-package``
1.6.0 holds LiTS training volume 117 (128x128x128, float32 HU, cropped around the liver;
labels 0 background, 1 liver, 2 tumour) as two MRC files. The setup installs it with
``--no-deps`` (its declared dependencies are ancient pins; only its two data files are
used). This command:

1. finds ``img_117.mrc`` and ``lab_117.mrc`` in that package (or takes ``--volume`` /
   ``--labels``);
2. runs ``liverseg-infer`` on the volume with the reference model shipped in liverseg
   (no training step), with progress, into ``runs/quickstart/`` (mask as NIfTI,
   ``per_volume.csv``, ``summary.json``, ``report.html``);
3. prints the 3D Dice against the labels (liver = label > 0) beside the throughput,
   with the caveats: the MRC header records no voxel size (so the model's training
   spacing is assumed and mL/mm figures rest on that), and LiTS patients may be among
   the Medical Segmentation Decathlon slices the model was trained on.

Exit codes: 0 done; 1 the run failed; 2 the sample data package or the model is missing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import command
from liverseg.core.errors import EXIT_FAILED, UsageError

SAMPLE_PACKAGE = "liver_ct_segmentation_package"
SAMPLE_PIP = "pip install --no-deps liver-ct-segmentation-package==1.6.0"
DEFAULT_OUT = Path("runs/quickstart")


def sample_files() -> tuple[Path, Path]:
    """(volume, labels) of LiTS 117 in the installed sample package; UsageError saying how to install it."""
    try:
        folder = Path(str(resources.files(SAMPLE_PACKAGE) / "data"))
    except ModuleNotFoundError:
        raise UsageError(
            f"the sample CT is not installed: {SAMPLE_PIP} (MIT licence; only its two data files are used)"
        ) from None
    img, lab = folder / "img_117.mrc", folder / "lab_117.mrc"
    for p in (img, lab):
        if not p.is_file():
            raise UsageError(f"{p}: missing from the installed sample package; reinstall it: {SAMPLE_PIP}")
    return img, lab


def describe_run(summary: dict[str, Any], row: dict[str, str]) -> list[str]:
    """The lines printed at the end: Dice, volumes, speed, and what they rest on."""
    lines = []
    if row.get("dice"):
        lines.append(
            f"Dice {float(row['dice']):.3f} (3D, liver = label > 0), IoU {float(row['iou']):.3f}, "
            f"liver {float(row['volume_ml']):.0f} mL vs {float(row['volume_ml_true']):.0f} mL labelled "
            f"at the assumed {row['spacing_mm']} mm voxels"
        )
    rate, model_rate = summary.get("images_per_second"), summary.get("model_images_per_second")
    if rate:
        lines.append(
            f"speed: {float(rate):.1f} slices/s end to end ({float(model_rate or 0):.1f} slices/s in the model), "
            f"{summary.get('engine')} {summary.get('precision')} on {summary.get('device')}"
        )
    lines.append(
        "caveats: LiTS patients may be among the Medical Segmentation Decathlon slices the model was trained on, "
        "so this is not an external test (MODEL_CARD.md has those); the MRC header records no voxel size, so the "
        "model's training spacing was assumed."
    )
    return lines


@command()
@click.option(
    "--volume",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CT volume instead of the sample (NIfTI, NRRD, MetaImage, MRC).",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Its liver labels (label > 0 is liver).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Run folder (replaced on each run).",
)
@click.option(
    "-m",
    "--model",
    default=None,
    metavar="FILE|latest|reference",
    help="Model [default: the reference model shipped with liverseg].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def main(volume: Path | None, labels: Path | None, out: Path, model: str | None, quiet: bool) -> None:
    """Segment a real CT (LiTS volume 117 from liver-ct-segmentation-package) with the shipped reference model."""
    import shutil

    from liverseg.infer.runner import Options, run_inference

    if volume is None:
        volume, sample_labels = sample_files()
        labels = labels or sample_labels
    click.echo(f"CT: {volume}" + (f"\nlabels: {labels}" if labels else ""))
    if out.exists() and (out / "run.json").is_file():
        shutil.rmtree(out)  # a previous quickstart run: start clean rather than resume
    res = run_inference(
        Options(source=volume, labels=labels, out=out, model=model, progress=None if not quiet else False)
    )
    if res.exit_code != 0 or res.summary is None:
        click.echo(f"error: the run failed ({res.message})", err=True)
        raise SystemExit(EXIT_FAILED)
    import csv

    with open(out / "per_volume.csv", newline="") as f:
        row = next(csv.DictReader(f))
    click.echo("")
    for line in describe_run(res.summary, row):
        click.echo(line)
    click.echo(f"mask: {out / row['output']}; report: {out / 'report.html'}")
    (out / "quickstart.json").write_text(
        json.dumps({"volume": str(volume), "labels": str(labels) if labels else None, "row": row}, indent=1) + "\n"
    )


if __name__ == "__main__":  # python -m liverseg.apps.quickstart
    main()
