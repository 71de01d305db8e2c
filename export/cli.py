"""``liverseg-export``: checkpoint -> TorchScript / ONNX (fp32, fp16, int8) + parity.json.

Output folder (default: the checkpoint's run folder + ``export/``, i.e.
``runs/X/checkpoints/best.pt -> runs/X/export/``), with stable names:

========================  ==================================================
``model.torchscript.pt``  TorchScript, frozen; contract in extra file
``model.onnx``            ONNX float32; contract in metadata_props
``model.fp16.onnx``       ONNX float16 network (``--fp16``; for CUDA)
``model.int8.onnx``       ONNX static QDQ int8 (``--int8 --calibration DATA``)
``parity.json``           measured parity of every file against eager PyTorch
========================  ==================================================

Every model file takes ``image`` uint8 [N,1,H,W] (float32 HU with ``--raw``) and
returns ``probability`` float32 and ``mask`` uint8, both [N,1,H,W].

Exit codes: 0 exported and within tolerance; 1 exported but some backend is out of
tolerance (see parity.json); 2 bad usage or bad input (one-line message, no model
file half-written).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from liverseg.core.cli import CONTEXT_SETTINGS, command
from liverseg.core.errors import ExportError, first_line
from liverseg.core.io import ensure_writable_dir

FORMATS = ("torchscript", "onnx", "all")
FILES = {
    "torchscript": "model.torchscript.pt",
    "onnx": "model.onnx",
    "onnx-fp16": "model.fp16.onnx",
    "onnx-int8": "model.int8.onnx",
}
PARITY_FILE = "parity.json"


class BadInput(click.ClickException):
    """A one-line error with exit code 2 (bad usage or bad input)."""

    exit_code = 2


def _shape(text: str, n: int, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{what} must look like {'x'.join(['N', '1', 'H', 'W'][-n:])}, got {text!r}") from None
    if len(dims) != n or min(dims) < 1:
        raise click.BadParameter(f"{what} must be {n} positive integers joined by 'x', got {text!r}")
    if n == 4 and dims[1] != 1:
        raise click.BadParameter(f"{what}: the model takes one channel, got {text!r}")
    return dims


def default_out_dir(ckpt_path: Path) -> Path:
    """runs/X/checkpoints/best.pt -> runs/X/export/; elsewhere <folder>/<stem>-export/."""
    ckpt_path = Path(ckpt_path)
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent / "export"
    return ckpt_path.parent / f"{ckpt_path.stem}-export"


def _file_info(path: Path) -> dict[str, Any]:
    from liverseg.models.checkpoint import file_sha256

    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _load_slices(source: Path, root: Path | None, start: int, count: int, what: str) -> Any:
    from liverseg.core.data import discover
    from liverseg.export.verify import RealSlices

    samples = discover(source, root=root)
    part = samples[start : start + count]
    if not part:
        raise ExportError(f"{source}: no {what} slices (found {len(samples)}, skipping {start})")
    return RealSlices.from_samples(part, f"{source} [{start}:{start + len(part)}]")


@command(context_settings={**CONTEXT_SETTINGS, "max_content_width": 100})
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="all", show_default=True, help="What to export.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder [default: the run folder's export/].",
)
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset.")
@click.option(
    "--exporter",
    type=click.Choice(["torchscript", "dynamo"]),
    default="torchscript",
    show_default=True,
    help="torch.onnx exporter (dynamo=False or dynamo=True).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    help="Mask threshold [default: the checkpoint's].",
)
@click.option("--raw", is_flag=True, help="Input float32 raw intensities (HU), windowed inside the model.")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (float16 network, for CUDA).")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (static QDQ; needs --calibration).")
@click.option(
    "--calibration",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Real slices (folder or CSV) to calibrate int8 on.",
)
@click.option(
    "--calibration-count",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Calibration slices: the first N of --calibration.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="int8 calibration method (onnxruntime).",
)
@click.option(
    "--validation",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Held-apart real slices (with masks) for the Dice check [default: the slices after the calibration ones].",
)
@click.option(
    "--validation-count", type=click.IntRange(1), default=32, show_default=True, help="Validation slices used."
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Root for relative paths in CSV lists.",
)
@click.option("--export-shape", default="1x1x256x256", show_default=True, help="Example input shape used to export.")
@click.option(
    "--check-shape", default="3x1x512x384", show_default=True, help="Random input shape used to check parity."
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the exported files run during the check (the eager reference runs on the CPU).",
)
@click.option(
    "--timing",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also time eager and each file at batch 1 on one real slice, this many rounds.",
)
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("runs"),
    show_default=True,
    help="Where to look for the newest run when no CHECKPOINT is given.",
)
def main(
    checkpoint: Path | None,
    fmt: str,
    out_dir: Path | None,
    opset: int,
    exporter: str,
    threshold: float | None,
    raw: bool,
    fp16: bool,
    int8: bool,
    calibration: Path | None,
    calibration_count: int,
    calibration_method: str,
    validation: Path | None,
    validation_count: int,
    data_root: Path | None,
    export_shape: str,
    check_shape: str,
    device: str,
    timing: int,
    runs_dir: Path,
) -> None:
    """Export CHECKPOINT (default: the newest runs/*/checkpoints/best.pt) with its pre- and post-processing
    inside, and measure parity against eager PyTorch into parity.json."""
    from liverseg.core.contract import ContractError
    from liverseg.core.data import DataError
    from liverseg.models.checkpoint import CheckpointError, file_sha256, latest_run_checkpoint, load_checkpoint

    exp_shape = _shape(export_shape, 4, "--export-shape")
    chk_shape = _shape(check_shape, 4, "--check-shape")
    if int8 and calibration is None:
        raise click.BadParameter(
            "--int8 needs --calibration DATA (a folder or CSV of real slices)", param_hint="--int8"
        )
    if (int8 or fp16) and fmt == "torchscript":
        raise click.BadParameter(
            "--int8/--fp16 derive from the ONNX model; use --format onnx or all", param_hint="--format"
        )
    if device == "cuda":
        import onnxruntime as ort
        import torch

        if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BadInput(
                "--device cuda: no CUDA device (torch.cuda.is_available() is False or onnxruntime has no "
                "CUDAExecutionProvider); the check never falls back to the CPU silently"
            )
    started = time.time()
    try:
        if checkpoint is None:
            checkpoint = latest_run_checkpoint(runs_dir)
            if checkpoint is None:
                raise ExportError(f"no CHECKPOINT given and no {runs_dir}/*/checkpoints/best.pt found")
            click.echo(f"liverseg-export: no CHECKPOINT given; using the newest run's best: {checkpoint}", err=True)
        ckpt = load_checkpoint(checkpoint)
        ckpt.build_model()  # weights must fit the named model exactly (strict), before anything is written
        sha = file_sha256(checkpoint)
        from liverseg.export.onnx import check_opset, export_onnx

        if fmt in ("onnx", "all"):
            check_opset(opset, exporter)
        out = ensure_writable_dir(out_dir if out_dir is not None else default_out_dir(checkpoint), ExportError)
        calib = val = None
        if calibration is not None:
            calib = _load_slices(calibration, data_root, 0, calibration_count, "calibration")
            if validation is None:
                val = _load_slices(calibration, data_root, calibration_count, validation_count, "held-apart validation")
        if validation is not None:
            val = _load_slices(validation, data_root, 0, validation_count, "validation")

        artifacts: dict[str, Path] = {}
        if fmt in ("torchscript", "all"):
            from liverseg.export.torchscript import export_torchscript

            t0 = time.time()
            artifacts["torchscript"] = export_torchscript(
                ckpt,
                out / FILES["torchscript"],
                threshold=threshold,
                raw=raw,
                checkpoint_sha256=sha,
                example_shape=exp_shape,
            )
            click.echo(f"wrote {artifacts['torchscript']} ({time.time() - t0:.1f} s)", err=True)
        if fmt in ("onnx", "all"):
            t0 = time.time()
            artifacts["onnx"] = export_onnx(
                ckpt,
                out / FILES["onnx"],
                opset=opset,
                threshold=threshold,
                raw=raw,
                checkpoint_sha256=sha,
                exporter=exporter,
                example_shape=exp_shape,
            )
            click.echo(
                f"wrote {artifacts['onnx']} (opset {opset}, {exporter} exporter, onnx.checker full check and "
                f"onnxruntime load passed, {time.time() - t0:.1f} s)",
                err=True,
            )
        if fp16:
            from liverseg.export.quantize import convert_fp16

            artifacts["onnx-fp16"] = convert_fp16(
                artifacts["onnx"],
                out / FILES["onnx-fp16"],
                check_providers=["CUDAExecutionProvider"] if device == "cuda" else None,
            )
            click.echo(f"wrote {artifacts['onnx-fp16']}", err=True)
        if int8:
            from liverseg.export.quantize import quantize_int8

            t0 = time.time()
            artifacts["onnx-int8"] = quantize_int8(
                artifacts["onnx"], out / FILES["onnx-int8"], calib.images, method=calibration_method
            )
            click.echo(
                f"wrote {artifacts['onnx-int8']} (calibrated on {len(calib.images)} slices, {time.time() - t0:.1f} s)",
                err=True,
            )

        from liverseg.export.verify import time_backends, verify

        click.echo(
            f"verifying against eager PyTorch (random {check_shape}"
            f"{f', {len(val.images)} real slices' if val is not None else ''}) ...",
            err=True,
        )
        report = verify(ckpt, artifacts, real=val, threshold=threshold, raw=raw, check_shape=chk_shape, device=device)
        if timing:
            img = val.images[0] if val is not None else None
            if img is None:
                import numpy as np

                img = np.random.default_rng(0).integers(0, 256, size=(256, 256), dtype=np.uint8)
            report.timing = time_backends(ckpt, artifacts, img, runs=timing, threshold=threshold, raw=raw)
    except (ExportError, CheckpointError, ContractError, DataError) as e:
        raise BadInput(str(e).splitlines()[0]) from None
    except OSError as e:
        raise BadInput(f"{getattr(e, 'filename', '') or ''}: {e.strerror or first_line(e)}".lstrip(": ")) from None

    parity = report.to_dict()
    parity["command"] = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    parity["checkpoint_sha256"] = sha
    parity["export"] = {
        "format": fmt,
        "opset": opset if fmt != "torchscript" else None,
        "exporter": exporter,
        "raw": raw,
        "threshold": report.threshold,
        "export_shape": list(exp_shape),
        "check_shape": list(chk_shape),
        "calibration": calib.source if calib is not None else None,
        "validation": val.source if val is not None else None,
        "seconds": round(time.time() - started, 1),
    }
    parity["files"] = {k: _file_info(p) for k, p in artifacts.items()}
    from liverseg.core.io import write_text_atomic
    from liverseg.export.verify import _finite

    write_text_atomic(out / PARITY_FILE, json.dumps(_finite(parity), indent=2) + "\n")
    stale = [out / f for k, f in FILES.items() if k not in artifacts and (out / f).exists()]
    click.echo(report.summary())
    if report.timing:
        click.echo(
            "timing, ms per slice at batch 1: "
            + ", ".join(f"{k} {v:.1f}" for k, v in report.timing["ms_per_slice"].items())
        )
    for s in stale:
        click.echo(f"note: {s} is from an earlier export and is not covered by this parity.json", err=True)
    click.echo(f"wrote {out / PARITY_FILE}: {'all backends within tolerance' if report.ok else 'OUT OF TOLERANCE'}")
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":  # python -m liverseg.export.cli
    main()
