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

Exit codes (the one table of :mod:`liverseg.core.errors`): 0 exported and within
tolerance; 1 exported but some backend is out of tolerance (see parity.json); 2 bad
usage, or a bad checkpoint, data file, option or device (one ``error:`` line, no model
file half-written); 130 interrupted.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liverseg.core.cli import CONTEXT_SETTINGS, command, raw_argv
from liverseg.core.errors import EXIT_FAILED, DeviceError, ExportError
from liverseg.core.files import ensure_writable_dir, write_text_atomic

if TYPE_CHECKING:  # torch and onnx are imported when the command runs, not for --help
    from liverseg.export.verify import ParityReport, RealSlices
    from liverseg.models.checkpoint import Checkpoint

FORMATS = ("torchscript", "onnx", "all")
FILES = {
    "torchscript": "model.torchscript.pt",
    "onnx": "model.onnx",
    "onnx-fp16": "model.fp16.onnx",
    "onnx-int8": "model.int8.onnx",
}
PARITY_FILE = "parity.json"


def _shape(text: str, what: str) -> tuple[int, int, int, int]:
    """``Nx1xHxW`` of an example or check input (the model takes one channel)."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{what} must look like Nx1xHxW, got {text!r}") from None
    if len(dims) != 4 or min(dims) < 1:
        raise click.BadParameter(f"{what} must be 4 positive integers joined by 'x', got {text!r}")
    if dims[1] != 1:
        raise click.BadParameter(f"{what}: the model takes one channel, got {text!r}")
    return dims[0], dims[1], dims[2], dims[3]


def default_out_dir(ckpt_path: Path) -> Path:
    """runs/X/checkpoints/best.pt -> runs/X/export/; elsewhere <folder>/<stem>-export/."""
    ckpt_path = Path(ckpt_path)
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent / "export"
    return ckpt_path.parent / f"{ckpt_path.stem}-export"


def _file_info(path: Path) -> dict[str, Any]:
    from liverseg.core.contract import file_sha256

    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _load_slices(source: Path, root: Path | None, start: int, count: int, what: str) -> RealSlices:
    from liverseg.core.images import discover
    from liverseg.export.verify import RealSlices

    samples = discover(source, root=root)
    part = samples[start : start + count]
    if not part:
        raise ExportError(f"{source}: no {what} slices (found {len(samples)}, skipping {start})")
    return RealSlices.from_samples(part, f"{source} [{start}:{start + len(part)}]")


@dataclass(frozen=True)
class ExportPlan:
    """What one ``liverseg-export`` run makes and checks (its options, validated)."""

    fmt: str
    opset: int
    exporter: str
    threshold: float | None
    raw: bool
    fp16: bool
    int8: bool
    calibration_method: str
    export_shape: tuple[int, int, int, int]
    check_shape: tuple[int, int, int, int]
    device: str
    timing: int

    @property
    def onnx(self) -> bool:
        return self.fmt in ("onnx", "all")

    @property
    def torchscript(self) -> bool:
        return self.fmt in ("torchscript", "all")


@dataclass
class RealData:
    """Real slices for int8 calibration and for the parity check's Dice (None when not given)."""

    calibration: RealSlices | None = None
    validation: RealSlices | None = None


def _require_cuda() -> None:
    """``--device cuda`` needs torch's CUDA and onnxruntime's CUDA provider; never a silent CPU fallback."""
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            "--device cuda: no CUDA device (torch.cuda.is_available() is False or onnxruntime has no "
            "CUDAExecutionProvider); the check never falls back to the CPU silently"
        )


def _checkpoint_path(checkpoint: str | None, runs_dir: Path) -> Path:
    """CHECKPOINT; 'latest': the newest run's best.pt; none: the reference model's checkpoint (said on stderr)."""
    from liverseg.models.checkpoint import latest_run_checkpoint
    from liverseg.reference import checkpoint_path

    if checkpoint is None or checkpoint == "reference":
        shipped = checkpoint_path()
        if shipped is None:
            raise ExportError("no CHECKPOINT given and the reference model's checkpoint is missing from this install")
        click.echo(
            f"liverseg-export: no CHECKPOINT given; using the reference model shipped with liverseg: {shipped}",
            err=True,
        )
        return shipped
    if checkpoint != "latest":
        if not Path(checkpoint).exists():
            raise ExportError(f"{checkpoint}: checkpoint not found (or name 'latest' or 'reference')")
        return Path(checkpoint)
    found = latest_run_checkpoint(runs_dir)
    if found is None:
        raise ExportError(f"CHECKPOINT latest: no {runs_dir}/*/checkpoints/best.pt found")
    click.echo(f"liverseg-export: CHECKPOINT latest: the newest run's best: {found}", err=True)
    return found


def _real_data(
    calibration: Path | None, validation: Path | None, root: Path | None, n_calibration: int, n_validation: int
) -> RealData:
    """Calibration slices, and validation slices: from --validation, else those after the calibration ones."""
    data = RealData()
    if calibration is not None:
        data.calibration = _load_slices(calibration, root, 0, n_calibration, "calibration")
        if validation is None:
            data.validation = _load_slices(calibration, root, n_calibration, n_validation, "held-apart validation")
    if validation is not None:
        data.validation = _load_slices(validation, root, 0, n_validation, "validation")
    return data


def _export_files(ckpt: Checkpoint, out: Path, sha: str, plan: ExportPlan, data: RealData) -> dict[str, Path]:
    """Write every model file the plan asks for; label -> path."""
    from liverseg.export.onnx import export_onnx

    artifacts: dict[str, Path] = {}
    common: dict[str, Any] = {
        "threshold": plan.threshold,
        "raw": plan.raw,
        "checkpoint_sha256": sha,
        "example_shape": plan.export_shape,
    }
    if plan.torchscript:
        from liverseg.export.torchscript import export_torchscript

        t0 = time.time()
        artifacts["torchscript"] = export_torchscript(ckpt, out / FILES["torchscript"], **common)
        click.echo(f"wrote {artifacts['torchscript']} ({time.time() - t0:.1f} s)", err=True)
    if plan.onnx:
        t0 = time.time()
        onnx_path = export_onnx(ckpt, out / FILES["onnx"], opset=plan.opset, exporter=plan.exporter, **common)
        artifacts["onnx"] = onnx_path
        click.echo(
            f"wrote {onnx_path} (opset {plan.opset}, {plan.exporter} exporter, onnx.checker full check and "
            f"onnxruntime load passed, {time.time() - t0:.1f} s)",
            err=True,
        )
    if plan.fp16:
        from liverseg.export.quantize import convert_fp16

        providers = ["CUDAExecutionProvider"] if plan.device == "cuda" else None
        artifacts["onnx-fp16"] = convert_fp16(artifacts["onnx"], out / FILES["onnx-fp16"], check_providers=providers)
        click.echo(f"wrote {artifacts['onnx-fp16']}", err=True)
    if plan.int8 and data.calibration is not None:  # _check_options made --calibration required with --int8
        from liverseg.export.quantize import quantize_int8

        t0 = time.time()
        images = data.calibration.images
        int8_path = quantize_int8(artifacts["onnx"], out / FILES["onnx-int8"], images, method=plan.calibration_method)
        artifacts["onnx-int8"] = int8_path
        click.echo(f"wrote {int8_path} (calibrated on {len(images)} slices, {time.time() - t0:.1f} s)", err=True)
    return artifacts


def _check_parity(
    ckpt: Checkpoint, artifacts: dict[str, Path], plan: ExportPlan, val: RealSlices | None
) -> ParityReport:
    """verify() every file against eager PyTorch; with --timing, also time them at batch 1."""
    from liverseg.export.verify import time_backends, verify

    click.echo(
        f"verifying against eager PyTorch (random {'x'.join(map(str, plan.check_shape))}"
        f"{f', {len(val.images)} real slices' if val is not None else ''}) ...",
        err=True,
    )
    report = verify(
        ckpt,
        artifacts,
        real=val,
        threshold=plan.threshold,
        raw=plan.raw,
        check_shape=plan.check_shape,
        device=plan.device,
    )
    if plan.timing:
        import numpy as np

        if val is not None:
            img = val.images[0]
        else:
            img = np.random.default_rng(0).integers(0, 256, size=(256, 256), dtype=np.uint8)
        report.timing = time_backends(ckpt, artifacts, img, runs=plan.timing, threshold=plan.threshold, raw=plan.raw)
    return report


def _gate_engines(report: ParityReport, artifacts: dict[str, Path], val: RealSlices | None) -> None:
    """Gate every engine and precision on the real slices (into parity.json) and write the
    siblings and the gates into each ONNX file's contract, where ``liverseg-infer``'s auto reads them."""
    from liverseg.export.verify import gate_and_record

    if "onnx" not in artifacts:
        return
    if val is not None and val.images:
        click.echo(f"gating the engines and precisions on {len(val.images)} real slices ...", err=True)
    report.gates = gate_and_record(artifacts, val)


def _write_parity(
    report: ParityReport,
    out: Path,
    sha: str,
    plan: ExportPlan,
    artifacts: dict[str, Path],
    data: RealData,
    seconds: float,
) -> Path:
    """parity.json: the report, the command, the export settings and every file's size and hash."""
    from liverseg.export.verify import _finite

    parity = report.to_dict()
    parity["command"] = " ".join(shlex.quote(a) for a in raw_argv("liverseg-export"))
    parity["checkpoint_sha256"] = sha
    parity["export"] = {
        "format": plan.fmt,
        "opset": plan.opset if plan.fmt != "torchscript" else None,
        "exporter": plan.exporter,
        "raw": plan.raw,
        "threshold": report.threshold,
        "export_shape": list(plan.export_shape),
        "check_shape": list(plan.check_shape),
        "calibration": data.calibration.source if data.calibration is not None else None,
        "validation": data.validation.source if data.validation is not None else None,
        "seconds": round(seconds, 1),
    }
    parity["files"] = {k: _file_info(p) for k, p in artifacts.items()}
    return write_text_atomic(out / PARITY_FILE, json.dumps(_finite(parity), indent=2) + "\n")


def _print_summary(report: ParityReport, out: Path, artifacts: dict[str, Path]) -> None:
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


def _check_options(plan: ExportPlan, calibration: Path | None) -> None:
    """Option combinations that cannot work, and a CUDA check that is not there: before any work."""
    if plan.int8 and calibration is None:
        raise click.BadParameter(
            "--int8 needs --calibration DATA (a folder or CSV of real slices)", param_hint="--int8"
        )
    if (plan.int8 or plan.fp16) and plan.fmt == "torchscript":
        raise click.BadParameter(
            "--int8/--fp16 derive from the ONNX model; use --format onnx or all", param_hint="--format"
        )
    if plan.device == "cuda":
        _require_cuda()


@command(context_settings={**CONTEXT_SETTINGS, "max_content_width": 100})
@click.argument("checkpoint", required=False, metavar="[CHECKPOINT|latest|reference]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="all", show_default=True, help="What to export.")
@click.option(
    "-o",
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
@click.option(
    "--pixel-spacing",
    type=click.FloatRange(min=0.0, max=10.0, min_open=True),
    default=None,
    help="In-plane pixel size (mm) of the training slices [default: the training config's pixel_spacing_mm]; "
    "volume inference resamples to it.",
)
@click.option(
    "--window-hu",
    type=(float, float),
    default=None,
    help="HU window LOW HIGH mapped to gray 0..255 in the training slices [default: the config's window_hu, "
    "else 0 255].",
)
def main(
    checkpoint: str | None,
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
    pixel_spacing: float | None,
    window_hu: tuple[float, float] | None,
) -> None:
    """Export CHECKPOINT ('latest': the newest runs/*/checkpoints/best.pt; default: the reference model shipped with
    liverseg) with its pre- and post-processing inside, and measure parity against eager PyTorch into parity.json."""
    from liverseg.core.contract import file_sha256
    from liverseg.export.onnx import check_opset
    from liverseg.models.checkpoint import load_checkpoint

    exp_shape, chk_shape = _shape(export_shape, "--export-shape"), _shape(check_shape, "--check-shape")
    plan = ExportPlan(
        fmt, opset, exporter, threshold, raw, fp16, int8, calibration_method, exp_shape, chk_shape, device, timing
    )
    _check_options(plan, calibration)
    started = time.time()
    # Every error below is a LiversegError (or OSError) that Command turns into one line and exit 2.
    path = _checkpoint_path(checkpoint, runs_dir)
    ckpt = load_checkpoint(path)
    if pixel_spacing is not None or window_hu is not None:  # what the training slices were, into the contract
        ckpt.config = {
            **(ckpt.config or {}),
            **({"pixel_spacing_mm": pixel_spacing} if pixel_spacing is not None else {}),
            **({"window_hu": list(window_hu)} if window_hu is not None else {}),
        }
    ckpt.build_model()  # weights must fit the named model exactly (strict), before anything is written
    sha = file_sha256(path)
    if plan.onnx:
        check_opset(opset, exporter)
    if out_dir is None:
        from liverseg.reference import checkpoint_path

        # never into the installed package's folder
        out_dir = runs_dir / "reference-export" if path == checkpoint_path() else default_out_dir(path)
    out = ensure_writable_dir(out_dir, ExportError)
    data = _real_data(calibration, validation, data_root, calibration_count, validation_count)
    artifacts = _export_files(ckpt, out, sha, plan, data)
    report = _check_parity(ckpt, artifacts, plan, data.validation)
    _gate_engines(report, artifacts, data.validation)
    _write_parity(report, out, sha, plan, artifacts, data, time.time() - started)
    _print_summary(report, out, artifacts)
    if not report.ok:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # python -m liverseg.export.cli
    main()
