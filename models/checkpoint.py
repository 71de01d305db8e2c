"""Self-describing checkpoints.

A checkpoint is a ``torch.save`` of plain containers (dict, list, str, int, float,
bool, None) and tensors only, so it loads with ``torch.load(weights_only=True)`` and
nothing in it is ever unpickled as an arbitrary object. Keys::

    format            "liverseg-checkpoint"
    format_version    1
    model             {"name": "unet", "args": {"in_channels": 1, "out_channels": 1, "width": 16}}
    preprocessing     Preprocessing.to_dict()
    threshold         probability threshold of the binary mask (0.5)
    config            the training config as given (JSON types)
    epoch             last finished epoch (1-based)
    history           [{"epoch", "mPA", "mIoU", "dice", "train_loss", "val_loss", ...}, ...]
    best              {"metric": name, "value": float, "epoch": int} or None
    data_summary      {"train": {...}, "val": {...}} counts and liver fraction
    versions          {"liverseg", "torch", "python", ...}
    state_dict        model weights
    optimizer         optimizer state (optional; for resume)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverseg.core.contract import file_sha256
from liverseg.core.errors import CheckpointError, first_line
from liverseg.core.io import atomic_path, versions
from liverseg.core.preprocess import Preprocessing
from liverseg.models import SegmentationPipeline, create_model

FORMAT = "liverseg-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model", "preprocessing", "threshold", "state_dict")
OPTIONAL_KEYS = ("config", "epoch", "history", "best", "data_summary", "versions", "optimizer", "scaler")


@dataclass
class Checkpoint:
    """The content of a checkpoint file, with typed access to what export and inference need."""

    model_name: str
    model_args: dict[str, Any]
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor]
    threshold: float = 0.5
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    data_summary: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    path: Path | None = None

    def build_model(self, eval_mode: bool = True) -> nn.Module:
        """The network with the stored weights (strict: every key must match)."""
        net = create_model(self.model_name, **self.model_args)
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            where = f"{self.path}: " if self.path else ""
            raise CheckpointError(
                f"{where}weights do not fit model {self.model_name} {self.model_args}: {first_line(e)}"
            ) from None
        return net.eval() if eval_mode else net

    def build_pipeline(self, threshold: float | None = None, raw: bool = False) -> nn.Module:
        """The whole model: raw pixels -> (probability, mask), as exported."""
        thr = self.threshold if threshold is None else threshold
        return SegmentationPipeline(self.build_model(), self.preprocessing, thr, raw=raw).eval()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": {"name": self.model_name, "args": dict(self.model_args)},
            "preprocessing": self.preprocessing.to_dict(),
            "threshold": float(self.threshold),
            "config": self.config,
            "epoch": int(self.epoch),
            "history": self.history,
            "best": self.best,
            "data_summary": self.data_summary,
            "versions": self.versions,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }
        if self.optimizer is not None:
            d["optimizer"] = self.optimizer
        if self.scaler is not None:
            d["scaler"] = self.scaler
        return d

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (unique temporary file in the same folder, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)
        return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``; any problem is one ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        d = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: not a loadable checkpoint ({_load_failure(e)})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        kind = type(d).__name__ if not isinstance(d, dict) else f"dict with keys {sorted(map(str, d))[:8]}"
        raise CheckpointError(f"{path}: not a liverseg checkpoint (found {kind}; expected format={FORMAT!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {d.get('format_version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {missing}")
    unexpected = sorted(set(d) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unexpected:
        raise CheckpointError(f"{path}: checkpoint has unexpected key(s) {unexpected}")
    model = d["model"]
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("name"), str)
        or not isinstance(model.get("args", {}), dict)
    ):
        raise CheckpointError(f"{path}: checkpoint 'model' must be {{'name': str, 'args': dict}}, got {model!r}")
    try:
        pp = Preprocessing.from_dict(d["preprocessing"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad preprocessing: {e}") from None
    return Checkpoint(
        model_name=model["name"],
        model_args=dict(model.get("args", {})),
        preprocessing=pp,
        state_dict=d["state_dict"],
        threshold=float(d["threshold"]),
        config=d.get("config") or {},
        epoch=int(d.get("epoch") or 0),
        history=list(d.get("history") or []),
        best=d.get("best"),
        data_summary=d.get("data_summary") or {},
        versions=d.get("versions") or {},
        optimizer=d.get("optimizer"),
        scaler=d.get("scaler"),
        path=path,
    )


def _load_failure(e: BaseException) -> str:
    """The informative part of a ``torch.load`` failure.

    With ``weights_only=True`` torch puts a paragraph about its defaults first and the
    actual reason after ``WeightsUnpickler error:``; a file that is not a checkpoint at
    all (text, a truncated download) says so in that reason.
    """
    text = str(e)
    if "WeightsUnpickler error:" in text:
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        return f"refused by weights_only loading: {reason[:200]}" if reason else "refused by weights_only loading"
    return first_line(e, 200)


def latest_run_checkpoint(runs_dir: str | os.PathLike = "runs", name: str = "best.pt") -> Path | None:
    """The newest ``runs/*/checkpoints/<name>`` (by modification time), or None."""
    runs = Path(runs_dir)
    found = list(runs.glob(f"*/checkpoints/{name}")) if runs.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "file_sha256",
    "latest_run_checkpoint",
    "load_checkpoint",
    "versions",
]
