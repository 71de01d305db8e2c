"""The model files a benchmark loads, made once per model through the export package.

The benchmark never exports on its own: every file comes from
``liverseg.export`` (``export_onnx``, ``export_torchscript``, ``quantize_int8``,
``convert_fp16``), so the rows measure exactly what ``liverseg-export`` ships. A file
that cannot be made is remembered as an error, and every row that needs it records
that error instead of stopping the run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from liverseg.core.errors import describe

KINDS = ("checkpoint", "onnx", "torchscript", "int8", "fp16")


def random_checkpoint(model: str, width: int, seed: int = 0) -> Any:
    """A :class:`Checkpoint` of ``model`` at ``width`` with seeded random weights (speed only)."""
    import torch

    from liverseg.core.preprocess import Preprocessing
    from liverseg.models import create_model, required_multiple
    from liverseg.models.checkpoint import Checkpoint

    torch.manual_seed(seed)
    args = {"in_channels": 1, "out_channels": 1, "width": int(width)}
    net = create_model(model, **args).eval()
    return Checkpoint(
        model_name=model,
        model_args=args,
        preprocessing=Preprocessing(pad_multiple=required_multiple(model)),  # the baseline needs 32
        state_dict=net.state_dict(),
        config={"note": f"random weights (seed {seed}) for benchmarking"},
    )


class Artifacts:
    """Lazily made model files in ``workdir``; ``path(kind)`` returns one or raises its stored error."""

    def __init__(
        self,
        ckpt: Any,
        workdir: Path,
        calibration: list[np.ndarray] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.ckpt = ckpt
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.calibration = calibration or []
        self.log = log or (lambda s: None)
        self._done: dict[str, Path] = {}
        self._errors: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.gates: list[dict[str, Any]] = []

    def error(self, kind: str) -> str | None:
        return self._errors.get(kind)

    def path(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown artifact {kind!r}; valid: {KINDS}")
        if kind in self._done:
            return self._done[kind]
        if kind in self._errors:
            raise RuntimeError(self._errors[kind])
        t0 = time.perf_counter()
        try:
            p = getattr(self, f"_make_{kind}")()
        except Exception as e:
            msg = f"making the {kind} file failed: {describe(e)}"
            self._errors[kind] = msg
            self.log(msg + "\n" + traceback.format_exc(limit=3))
            raise RuntimeError(msg) from None
        self.seconds[kind] = time.perf_counter() - t0
        self.log(f"made {kind}: {p.name} in {self.seconds[kind]:.1f} s")
        self._done[kind] = p
        return p

    def gate(self, real: Any) -> list[dict[str, Any]]:
        """Gate the fp32 file and its int8 sibling on ``real`` labelled slices, as ``liverseg-export`` does.

        The rows go into both files' contracts, so ``liverseg-infer --engine auto`` (the
        end-to-end row ``auto``) chooses among the engines and precisions that passed, as it
        would on an export made with ``--validation``. Without it an export has no judged
        gates and ``auto`` keeps fp32. Returns the rows (also kept in ``self.gates``).
        """
        from liverseg.export.verify import gate_and_record

        files = {"onnx": self.path("onnx")}
        if self.calibration:
            try:
                files["onnx-int8"] = self.path("int8")
            except RuntimeError:
                pass  # recorded in self._errors; the fp32 engines are still gated
        t0 = time.perf_counter()
        self.gates = gate_and_record(files, real)
        self.seconds["gates"] = time.perf_counter() - t0
        self.log(f"gated {len(self.gates)} engine rows on {len(real.images)} slices in {self.seconds['gates']:.1f} s")
        return self.gates

    def _make_checkpoint(self) -> Path:
        path = getattr(self.ckpt, "path", None)
        if path is not None and Path(path).is_file():
            return Path(path)
        return self.ckpt.save(self.workdir / "model.pt")

    def _make_onnx(self) -> Path:
        from liverseg.export.onnx import export_onnx

        return Path(export_onnx(self.ckpt, self.workdir / "model.onnx"))

    def _make_torchscript(self) -> Path:
        from liverseg.export.torchscript import export_torchscript

        return Path(export_torchscript(self.ckpt, self.workdir / "model.torchscript.pt"))

    def _make_int8(self) -> Path:
        from liverseg.export.quantize import quantize_int8

        if not self.calibration:
            raise ValueError("int8 quantization needs calibration images and none were given")
        return Path(quantize_int8(self.path("onnx"), self.workdir / "model.int8.onnx", self.calibration))

    def _make_fp16(self) -> Path:
        from liverseg.export.quantize import convert_fp16

        return Path(convert_fp16(self.path("onnx"), self.workdir / "model.fp16.onnx"))
