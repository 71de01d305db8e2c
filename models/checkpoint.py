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

:func:`load_checkpoint` checks every field before anything is built: a registered model
name, its arguments within :data:`liverseg.models.ARG_RANGES` (width 1..MAX_WIDTH), a
finite threshold strictly between 0 and 1, preprocessing fields of the right types and
ranges, state-dict tensors with the model's keys and shapes and finite values. A file
whose pickle would import anything (Python code or objects) is refused for safety.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverseg.core.contract import file_sha256
from liverseg.core.errors import CheckpointError, ConfigError, first_line
from liverseg.core.files import atomic_path, versions
from liverseg.core.preprocess import NORMALIZATIONS, Preprocessing
from liverseg.models import MODELS, SegmentationPipeline, check_model_args, create_model, required_multiple

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
    """Load with ``weights_only=True`` and check every field; any problem is one ``CheckpointError`` naming
    the file and the field."""
    path = Path(path)
    d = read_weights_only(path, map_location)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        kind = type(d).__name__ if not isinstance(d, dict) else f"dict with keys {sorted(map(str, d))[:8]}"
        raise CheckpointError(f"{path}: not a liverseg checkpoint (found {kind}; expected format={FORMAT!r})")
    version = d.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {missing}")
    unexpected = sorted(set(d) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unexpected:
        raise CheckpointError(f"{path}: checkpoint has unexpected key(s) {unexpected}")
    try:
        return _checked(d, path)
    except _BadField as e:
        raise CheckpointError(f"{path}: field {e.field!r}: {e.why}") from None


def read_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a file; a missing, unreadable or unsafe file is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: {_load_failure(e)}") from None


# ---------------------------------------------------------------- field checks

# Largest preprocessing size side and pad multiple a checkpoint may ask for.
MAX_SIDE = 16384
MAX_PAD_MULTIPLE = 1024


class _BadField(Exception):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field, self.why = field, why


def _got(v: Any) -> str:
    return f"got {type(v).__name__} {v!r}"[:120]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(d: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """An optional container field: absent or None gives ``default``; else it must be a ``kind``."""
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, kind):
        raise _BadField(key, f"must be a {kind.__name__}, {_got(v)}")
    return v


def _checked(d: dict[str, Any], path: Path) -> Checkpoint:
    """A :class:`Checkpoint` from a loaded dict whose every field has been checked (``_BadField`` otherwise)."""
    name, args = _check_model(d["model"])
    pp = _check_preprocessing(d["preprocessing"], name)
    threshold = d["threshold"]
    if not _is_finite_number(threshold) or not 0.0 < threshold < 1.0:
        raise _BadField("threshold", f"must be a number strictly between 0 and 1, {_got(threshold)}")
    state_dict = _check_state_dict(d["state_dict"], name, args)
    epoch = d.get("epoch", 0)
    if not _is_int(epoch) or epoch < 0:
        raise _BadField("epoch", f"must be an integer >= 0, {_got(epoch)}")
    history = _optional(d, "history", list, [])
    if not all(isinstance(h, dict) for h in history):
        raise _BadField("history", "must be a list of per-epoch dicts")
    return Checkpoint(
        model_name=name,
        model_args=args,
        preprocessing=pp,
        state_dict=state_dict,
        threshold=float(threshold),
        config=_optional(d, "config", dict, {}),
        epoch=epoch,
        history=list(history),
        best=_check_best(d.get("best")),
        data_summary=_optional(d, "data_summary", dict, {}),
        versions=_optional(d, "versions", dict, {}),
        optimizer=_optional(d, "optimizer", dict, None),
        scaler=_optional(d, "scaler", dict, None),
        path=path,
    )


def _check_model(model: Any) -> tuple[str, dict[str, int]]:
    if not isinstance(model, dict) or set(model) - {"name", "args"}:
        raise _BadField("model", f"must be {{'name': str, 'args': dict}}, {_got(model)}")
    name = model.get("name")
    if not isinstance(name, str) or name not in MODELS:
        raise _BadField("model.name", f"must be one of {sorted(MODELS)}, {_got(name)}")
    args = model.get("args", {})
    if not isinstance(args, dict):
        raise _BadField("model.args", f"must be a dict, {_got(args)}")
    try:
        return name, check_model_args(name, args)
    except ConfigError as e:
        raise _BadField("model.args", str(e)) from None


def _pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2


def _check_preprocessing(pp: Any, model: str) -> Preprocessing:
    if not isinstance(pp, dict):
        raise _BadField("preprocessing", f"must be a dict, {_got(pp)}")
    known = {f.name for f in fields(Preprocessing)}
    if set(pp) - known:
        raise _BadField("preprocessing", f"unknown key(s) {sorted(map(str, set(pp) - known))}; valid: {sorted(known)}")
    normalize, size = pp.get("normalize", "scale"), pp.get("size")
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise _BadField("preprocessing.normalize", f"must be one of {list(NORMALIZATIONS)}, {_got(normalize)}")
    if size is not None and not (_pair(size) and all(_is_int(s) and 1 <= s <= MAX_SIDE for s in size)):
        raise _BadField("preprocessing.size", f"must be null or [height, width] in 1..{MAX_SIDE}, {_got(size)}")
    multiple, pad = required_multiple(model), pp.get("pad_multiple", 16)
    if not _is_int(pad) or not 1 <= pad <= MAX_PAD_MULTIPLE or pad % multiple:
        raise _BadField(
            "preprocessing.pad_multiple",
            f"must be an integer multiple of {multiple} (model {model}) up to {MAX_PAD_MULTIPLE}, {_got(pad)}",
        )
    window = pp.get("window", (0.0, 255.0))
    if not (_pair(window) and all(_is_finite_number(w) for w in window) and window[1] > window[0]):
        raise _BadField("preprocessing.window", f"must be [low, high], finite numbers with high > low, {_got(window)}")
    return Preprocessing.from_dict(pp)


def _check_state_dict(sd: Any, name: str, args: dict[str, int]) -> dict[str, torch.Tensor]:
    """Tensors with exactly the model's keys and shapes (compared on the meta device: nothing is allocated)."""
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise _BadField("state_dict", "must map parameter names to tensors")
    with torch.device("meta"):
        expected = create_model(name, **args).state_dict()
    where = f"weights do not fit model {name} {args}"
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or extra:
        raise _BadField("state_dict", f"{where}: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, want in expected.items():
        got = sd[key]
        if got.shape != want.shape or got.is_floating_point() != want.is_floating_point():
            raise _BadField(
                "state_dict", f"{where}: {key} is {got.dtype} {list(got.shape)}, expected {list(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _BadField("state_dict", f"{key} holds NaN or infinite values")
    return sd


def _check_best(best: Any) -> dict[str, Any] | None:
    if best is None:
        return None
    ok = (
        isinstance(best, dict)
        and isinstance(best.get("metric"), str)
        and _is_finite_number(best.get("value"))
        and _is_int(best.get("epoch"))
    )
    if not ok:
        raise _BadField(
            "best", f"must be null or {{'metric': str, 'value': finite number, 'epoch': int}}, {_got(best)}"
        )
    return best


def _load_failure(e: BaseException) -> str:
    """What a ``torch.load(weights_only=True)`` failure means, without torch's advice to turn the guard off.

    With ``weights_only=True`` torch refuses a pickle that would import a global or build
    an object other than a tensor (``Unsupported global: GLOBAL ...``, ``Can only build
    ...``): such a file holds Python code or objects and is refused for safety. Other
    failures (text, a truncated download, pickle instructions torch never writes) are
    files that are not checkpoints at all.
    """
    text = str(e)
    if "WeightsUnpickler error:" not in text:
        return f"not a loadable checkpoint ({first_line(e, 200)})"
    reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
    found = re.search(r"GLOBAL (\S+)", reason)
    if found or reason.startswith(("Can only create new object", "Can only build")):
        what = f"it would import {found.group(1)}" if found else reason.split(" or ")[0][:80]
        return (
            f"refused for safety: the file holds Python code or objects ({what}), not only tensors and plain "
            "containers as a liverseg checkpoint does; nothing in it was run"
        )
    return f"not a loadable checkpoint (not a torch checkpoint file: {reason.split('. ')[0][:120]})"


def release_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, provenance: dict[str, str]) -> Path:
    """``src`` as a checkpoint to ship: weights, config and history without the optimiser state or any path of
    the machine that trained it (config paths cut to file names), with ``provenance`` in its config."""
    from liverseg.core.contract import without_paths

    ckpt = load_checkpoint(src)
    ckpt.optimizer, ckpt.scaler = None, None
    ckpt.config = {**without_paths(ckpt.config or {}), "provenance": dict(provenance)}
    ckpt.data_summary = without_paths(ckpt.data_summary or {})
    return ckpt.save(dst)


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
    "release_checkpoint",
    "latest_run_checkpoint",
    "load_checkpoint",
    "read_weights_only",
    "versions",
]
