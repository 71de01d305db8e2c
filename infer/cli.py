"""``liverseg-infer``: batch inference with ONNX Runtime (see :mod:`liverseg.infer.runner`).

Exit codes: 0 every input succeeded, 1 some failed (or were skipped by --fail-fast),
2 usage error (bad option, no model, model without contract, unusable device), reported
before any work as one ``error:`` line by :class:`liverseg.core.cli.Command`,
3 the disk filled up, 130 interrupted (Ctrl-C or SIGTERM; finish with ``--resume``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from liverseg.core.choose import ENGINE_CHOICES, PRECISION_CHOICES
from liverseg.core.cli import command, raw_argv
from liverseg.core.images import DEFAULT_MAX_PIXELS
from liverseg.core.intensity import INTENSITY_MODES
from liverseg.infer.dicomweb import InputArgument, StoreURL
from liverseg.infer.outcome import summary_table
from liverseg.infer.runner import OUTPUT_FORMATS, Options, Runner
from liverseg.predict.model import DEVICES
from liverseg.predict.predictor import MODEL_MAX_PIXELS

# --help in sections, the common options first in each (the Command's format_options); every option of
# liverseg-infer is in one of them (tests/test_commands.py), so a new option needs a line here.
SECTIONS = [
    (
        "Inputs",
        ["labels", "series", "spacing", "window", "intensity", "data_root", "limit", "allow_gaps", "allow_non_ct",
         "max_pixels"],
    ),
    ("Model and engine", ["model", "device", "engine", "precision", "batch_size", "threads", "contract", "spinning"]),
    (
        "Outputs",
        ["out", "output_format", "store", "store_overlay", "overlays", "save_probabilities", "report", "anatomy",
         "second_look", "largest_component", "min_blob"],
    ),
    (
        "Run control",
        ["resume", "fail_fast", "fail_on_flags", "progress", "num_parts", "part_id", "debug", "version", "help"],
    ),
]  # fmt: skip


# Click parses here; Options checks the values, once, when main builds it: a range, a device name, a pair
# of options that cannot go together is refused there with the same UsageError a Python caller of
# run_inference gets (Command prints it as one 'error:' line, exit 2). click.Path and the closed sets'
# click.Choice stay: the type is the parse there, and --help lists the choices (Options checks the same
# constants for Python callers).


def _flag_codes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--fail-on-flags``: comma-separated quality-flag codes, or ``any`` (Options refuses an unknown one)."""
    return tuple(c.strip() for c in value.split(",") if c.strip())


@command(sections=SECTIONS)
@click.argument("input", type=InputArgument())
@click.option(
    "-m",
    "--model",
    type=str,
    default=None,
    metavar="FILE|latest|reference",
    help="Exported ONNX model file, or a liverseg checkpoint (.pt: exported once into the cache); 'latest': the "
    "newest runs/*/export/model.onnx; 'reference' (the default): the reference model shipped with liverseg. "
    "Always printed.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A mask file (PNG, or a NIfTI/NRRD label volume: label > 0 is liver), a *_y.csv or a folder of masks. "
    "Default: found next to INPUT: test_x.csv -> test_y.csv; images/ -> masks/ and Images/ -> Labels/, whether "
    "INPUT is their parent or the images folder; NNN_mask.png beside NNN.png.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder. Default: a new runs/infer-YYYYmmdd-HHMMSS/.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="|".join((*DEVICES, "cuda:N")),
    help="cuda fails when CUDA cannot load; auto takes CUDA when it loads and says which; cuda:N takes GPU N "
    "(one part of a split run per GPU).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINE_CHOICES),
    default="auto",
    show_default=True,
    help="auto: the fastest engine for this machine (CPU features, installed engines, GPU); it says which and why. "
    "tensorrt: ONNX Runtime's TensorRT provider on the GPU (only when asked; unverified: never run on a GPU).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="auto",
    show_default=True,
    help="auto: a reduced precision (bf16, int8) only where the export's accuracy gate passed.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Images of the same size per model call. Default: 1 on CPU, 8 on CUDA.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="onnxruntime intra-op threads. Default: the CPUs this process may use.",
)
@click.option(
    "--overlays", is_flag=True, help="Write overlays (TP white, FP blue, FN red; without labels the outline)."
)
@click.option("--save-probabilities", is_flag=True, help="Write probability maps (16-bit PNG, value/65535).")
@click.option(
    "--resume", is_flag=True, help="Skip inputs whose outputs in --out are complete (finish an interrupted run)."
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails.")
@click.option("--limit", type=int, default=None, help="Only the first N inputs.")
@click.option(
    "--contract",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Contract JSON for a model file that carries none (preprocessing, threshold).",
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder that relative CSV paths start from (default: the current folder, then the CSV's).",
)
@click.option(
    "--spinning/--no-spinning",
    default=False,
    show_default=True,
    help="Let onnxruntime's threads spin between runs (off: they would steal the decode/encode cores).",
)
@click.option(
    "--spacing",
    type=float,
    default=None,
    help="In-plane pixel size (mm, above 0 and at most 10) of 2D inputs, which have none; overrides a volume's "
    "header. Inputs are resampled to the model's training spacing when its contract records one.",
)
@click.option(
    "--window",
    type=(float, float),
    default=None,
    metavar="LOW HIGH",
    help="HU window mapped to gray 0..255 [default: the model's contract, else 0 255, the PNG sets' rule].",
)
@click.option(
    "--intensity",
    type=click.Choice(INTENSITY_MODES),
    default="auto",
    show_default=True,
    help="What stored values are: gray, signed HU, or HU+1024; auto: 8-bit is gray, negative below -200 is HU, "
    "16-bit up to 4095 is HU+1024, other 16-bit is gray.",
)
@click.option("--allow-gaps", is_flag=True, help="Process a DICOM series with missing slices or uneven spacing.")
@click.option("--series", default=None, metavar="UID", help="SeriesInstanceUID to read from a DICOM folder.")
@click.option(
    "--largest-component", is_flag=True, help="Keep only the largest connected liver region (3D for volumes)."
)
@click.option(
    "--allow-non-ct",
    is_flag=True,
    help="Accept inputs that do not look like CT: label maps and masks, colour images, MR-like numbers "
    "(refused by default, each with its reason).",
)
@click.option(
    "--anatomy/--no-anatomy",
    default=True,
    show_default=True,
    help="Volumes: keep the largest liver region that lies where a liver can (below the lungs' centre, on the "
    "patient's right, 20 mL or more); none there gives an empty mask, 'no liver'.",
)
@click.option(
    "--second-look/--no-second-look",
    default=True,
    show_default=True,
    help="Volumes: run the model once more on a few flipped slices, to flag a mirrored input (wrong_side) and an "
    "unsure prediction (unstable); about 5% of a 300-slice series' model time.",
)
@click.option(
    "--fail-on-flags",
    default="",
    metavar="CODES",
    callback=_flag_codes,
    help="Fail the inputs that raise these quality flags (comma-separated codes of docs/quality.md, or 'any'): "
    "exit 1 for pipelines that must stop; the outputs are still written. Default: flags never fail an input.",
)
@click.option(
    "--min-blob",
    type=int,
    default=0,
    show_default=True,
    help="Remove connected regions smaller than this many voxels (pixels for slices).",
)
@click.option(
    "--output-format",
    type=click.Choice(OUTPUT_FORMATS),
    default="nifti",
    show_default=True,
    help="Volume masks: NIfTI (uint8, liver = 1); nifti+dicom-seg also writes a DICOM-SEG for DICOM inputs.",
)
@click.option(
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Images declaring more pixels than this are refused from their header, before decoding. Slices above "
    f"{MODEL_MAX_PIXELS:,} pixels are run downscaled and their masks resized back.",
)
@click.option(
    "--num-parts",
    type=int,
    default=1,
    show_default=True,
    help="Split the inputs into N parts by sorted output key; run one with --part-id. All parts may write "
    "into one --out at once; liverseg-merge OUT then writes the whole run's tables and report.",
)
@click.option(
    "--part-id",
    type=int,
    default=None,
    metavar="K",
    help="Which part (0..N-1) of --num-parts N this process runs.",
)
@click.option(
    "--store",
    type=StoreURL(),
    default=None,
    metavar="dicomweb+http(s)://HOST:PORT/PATH",
    help="Send each DICOM-SEG to this DICOMweb server (STOW-RS) into its study; implies nifti+dicom-seg. "
    "Credentials from the environment or netrc, never the URL (docs/dicomweb.md).",
)
@click.option(
    "--store-overlay",
    is_flag=True,
    help="With --store, also send a burned-in overlay series (DICOM Secondary Capture: each slice that holds "
    "liver, the liver outlined) for viewers that cannot show DICOM-SEG.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html at the end.")
def main(
    input: Path | str,
    model: str | None,
    labels: Path | None,
    out: Path | None,
    device: str,
    batch_size: int | None,
    threads: int | None,
    overlays: bool,
    save_probabilities: bool,
    resume: bool,
    fail_fast: bool,
    limit: int | None,
    contract: Path | None,
    data_root: Path | None,
    spinning: bool,
    spacing: float | None,
    window: tuple[float, float] | None,
    intensity: str,
    allow_gaps: bool,
    series: str | None,
    largest_component: bool,
    allow_non_ct: bool,
    anatomy: bool,
    second_look: bool,
    fail_on_flags: tuple[str, ...],
    min_blob: int,
    output_format: str,
    max_pixels: int,
    engine: str,
    precision: str,
    num_parts: int,
    part_id: int | None,
    store: str | None,
    store_overlay: bool,
    progress: bool | None,
    report: bool,
) -> None:
    """Segment the liver in INPUT: an image, a CT volume (.nii/.nii.gz/.nrrd/.mha/.mhd), a DICOM series
    folder, a folder of images or volumes, a DICOMweb study or series (dicomweb+http://HOST:PORT/PATH/studies/UID),
    or a CSV listing any of these."""
    opts = Options(
        source=input,
        model=model,
        labels=labels,
        out=out,
        device=device,
        batch_size=batch_size,
        threads=threads,
        overlays=overlays,
        save_probabilities=save_probabilities,
        resume=resume,
        fail_fast=fail_fast,
        limit=limit,
        contract=contract,
        data_root=data_root,
        spinning=spinning,
        progress=progress,
        report=report,
        spacing=spacing,
        window=window,
        intensity=intensity,
        allow_gaps=allow_gaps,
        series=series,
        largest_component=largest_component,
        allow_non_ct=allow_non_ct,
        anatomy=anatomy,
        second_look=second_look,
        fail_on_flags=fail_on_flags,
        min_blob=min_blob,
        output_format=output_format,
        max_pixels=max_pixels,
        engine=engine,
        precision=precision,
        num_parts=num_parts,
        part_id=part_id,
        store=store,
        store_overlay=store_overlay,
        command=raw_argv("liverseg-infer"),
    )
    # A usage-type error (UsageError, ContractError, DeviceError) propagates to Command: one line, exit 2.
    res = Runner(opts, log=lambda s: click.echo(s, err=True)).run()
    if res.summary is None:  # interrupted: the message says how to resume
        click.echo(res.message, err=True)
    else:
        click.echo(summary_table(res.summary, res.out_dir))
        if res.out_dir is not None:  # the report's banner, where the user looks
            from liverseg.infer.report import cautions

            for line in cautions(res.out_dir):
                click.echo(f"caution  {line}", err=True)
    sys.exit(res.exit_code)


if __name__ == "__main__":
    main(prog_name="liverseg-infer")
