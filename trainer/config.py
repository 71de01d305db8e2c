"""The training config: the study's JSON keys, verbatim, plus optional extensions.

The study (Dubois & Dzadon 2024) ran ``python main.py train`` with a JSON file holding
exactly these keys::

    model ("unet" | "baseline"), in_dim, out_dim, out_activation ("sigmoid"),
    tdata_x_path, tdata_y_path, vdata_x_path, vdata_y_path,
    lr, optim ("adam"), loss ("bce"), train_batch_size, valid_batch_size, epochs,
    val_metrics (["mPA", "mIoU"]), save_model, seed, num_workers

Such a file loads unchanged. Meanings that differ from a literal reading:

* ``loss: "bce"`` is binary cross-entropy on *logits* (``BCEWithLogitsLoss``); the
  networks return logits and ``out_activation: "sigmoid"`` is applied outside them
  (in the exported pipeline and in evaluation), which is numerically the same model.
* ``save_model``: ``true`` writes ``checkpoints/best.pt`` and ``checkpoints/last.pt`` in
  the run folder, ``false`` writes no checkpoint (the epoch table is still written);
  a string is a file path: checkpoints are written as for ``true`` and the best one is
  also copied to that path.
* ``val_metrics`` chooses the metrics printed on each epoch line; all metrics are
  always computed and written to ``epochs.csv``.

Optional keys (defaults in :class:`TrainConfig`): ``device``, ``output_dir``,
``width``, ``image_size``, ``normalize``, ``augment``, ``amp``, ``resume``,
``keep_best``, ``early_stopping``, ``min_delta``, ``data_root``, ``threshold``,
``deterministic``, ``weight_decay``, ``lr_schedule``, ``sync_batchnorm`` (SyncBatchNorm
when several processes train, :mod:`liverseg.trainer.distributed`), ``pixel_spacing_mm`` and
``window_hu`` (what the training slices are: their in-plane pixel size in mm, and the
HU window mapped to gray 0..255 -- [0, 255] for this project's PNG sets; both go into
the exported model's contract, and volume inference resamples and windows by them) and
``provenance`` (an object of strings: where the training data came from, its licence...;
copied into the exported model's contract so a model file says what it was trained on).

Paths in the config (the four CSVs, ``resume``, ``data_root``) are relative to the
current directory, then to the config file's folder (:meth:`TrainConfig.from_json`).
Unknown keys, wrong types and bad values raise :class:`ConfigError` naming the key,
before any work starts; so do a key given twice (Python's json would keep the last one
silently) and a non-finite number (``Infinity``, ``NaN``, which JSON does not allow but
Python's json reads). ``output_dir`` naming a file and a ``save_model`` path naming a
folder are refused by :func:`liverseg.trainer.train.preflight`, before any run folder.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from liverseg.core.errors import ConfigError
from liverseg.core.preprocess import NORMALIZATIONS
from liverseg.models import DEFAULT_WIDTH, MAX_WIDTH, MODELS
from liverseg.trainer.augment import AugmentConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("bce", "dice", "bce+dice")
ACTIVATIONS = ("sigmoid",)
AMP_MODES = ("off", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
VAL_METRICS = ("mPA", "mIoU", "dice", "iou", "precision", "recall")
# Metrics keep-best and early stopping can follow; val_loss is minimised, the rest maximised.
BEST_METRICS = (*VAL_METRICS, "val_loss")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
REQUIRED = ("model", "tdata_x_path", "vdata_x_path")
PATH_KEYS = ("tdata_x_path", "tdata_y_path", "vdata_x_path", "vdata_y_path", "resume", "init_from", "data_root")


# Over 60 lines because it declares one field per config key (35); its methods are short.
@dataclass(frozen=True)
class TrainConfig:
    """One training run. The first block is the study's keys; the rest are optional."""

    # --- the study's keys
    model: str
    tdata_x_path: str
    vdata_x_path: str
    tdata_y_path: str | None = None  # None: a pairs CSV (X,Y) or the *_y.csv partner
    vdata_y_path: str | None = None
    in_dim: int = 1
    out_dim: int = 1
    out_activation: str = "sigmoid"
    lr: float = 1e-5
    optim: str = "adam"
    loss: str = "bce"
    train_batch_size: int = 1
    valid_batch_size: int = 1
    epochs: int = 7
    val_metrics: tuple[str, ...] = ("mPA", "mIoU")
    save_model: bool | str = True
    seed: int = 42
    num_workers: int = 0
    # --- extensions
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output_dir: str = "runs"
    width: int | None = None  # None: the study's width of the model (U-Net 64)
    image_size: tuple[int, int] | None = None  # resize every slice to [H, W]
    normalize: str = "scale"  # scale (/255, the study's) | zscore
    augment: AugmentConfig | None = None  # true, false or {hflip, vflip, rotate, ...}
    amp: str = "off"  # off | bf16 | fp16 (CUDA only)
    resume: str | None = None  # checkpoint to continue from (its optimizer state too)
    init_from: str | None = None  # checkpoint whose weights start a new training (fine-tuning; epoch 1, new optimizer)
    keep_best: str = "dice"  # the validation metric that picks best.pt
    early_stopping: int | None = None  # patience in epochs without improvement
    min_delta: float = 0.0  # improvement needed to count for keep_best/early stopping
    data_root: str | None = None  # relative CSV entries resolve here first
    threshold: float = 0.5  # probability threshold of the mask
    deterministic: bool = False  # deterministic cuDNN algorithms (slower on CUDA)
    sync_batchnorm: bool = False  # several processes (torchrun): BatchNorm statistics over the global batch
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant (the study's) | cosine (lr * 0.5 (1 + cos(pi (epoch-1) / epochs)))
    pixel_spacing_mm: float | None = None  # in-plane pixel size of the training slices; recorded in the contract
    window_hu: tuple[float, float] = (0.0, 255.0)  # CT numbers -> gray 0..255 of the training slices (the PNG sets')
    provenance: dict[str, str] | None = None  # what the training data is (names, sources, licences): the contract

    # ------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """Validate every key by name and build the config; raises :class:`ConfigError`."""
        values = checked_keys(d, [f.name for f in fields(cls)], REQUIRED, _CHECKS, source)
        cfg = cls(**values)
        cfg._check_relations(source)
        return cfg

    @classmethod
    def from_json(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Load a JSON config; relative paths in it resolve to the cwd, then the file's folder."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config ({e})") from None
        try:
            d = _strict_json(json.loads(text, object_pairs_hook=_Pairs))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except _Bad as e:
            raise ConfigError(f"{path}: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: the config must be a JSON object, got {type(d).__name__}")
        d = {**d, **(overrides or {})}
        for key in PATH_KEYS:
            if isinstance(d.get(key), str):
                d[key] = resolve_config_path(d[key], path.parent)
        return cls.from_dict(d, source=str(path))

    def _check_relations(self, source: str) -> None:
        if self.amp != "off" and self.device == "cpu":
            raise ConfigError(
                f"{source}: key 'amp': {self.amp!r} needs a CUDA device, but device is 'cpu' (set amp to 'off')"
            )

    # ------------------------------------------------------------ derived values

    @property
    def model_width(self) -> int:
        return self.width if self.width is not None else DEFAULT_WIDTH[self.model]

    def model_args(self) -> dict[str, int]:
        return {"in_channels": self.in_dim, "out_channels": self.out_dim, "width": self.model_width}

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (what config.json and checkpoints hold)."""
        d = asdict(self)
        d["val_metrics"] = list(self.val_metrics)
        d["image_size"] = list(self.image_size) if self.image_size is not None else None
        d["augment"] = self.augment.to_dict() if self.augment is not None else False
        d["window_hu"] = list(self.window_hu)
        return d


def resolve_config_path(value: str, config_dir: Path) -> str:
    """A path from a config: as given when it exists from the cwd, else beside the config."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return value
    beside = config_dir / p
    return str(beside) if beside.exists() else value


def checked_keys(
    d: Any, known: list[str], required: Iterable[str], checks: dict[str, Callable[[Any], Any]], source: str
) -> dict[str, Any]:
    """Every key of a config object checked by name: unknown (with a close match), missing, or a bad value.

    Raises :class:`ConfigError` naming ``source`` and the key; returns the checked values.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: the config must be a JSON object, got {type(d).__name__}")
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    for key in required:
        if key not in d:
            raise ConfigError(f"{source}: missing required key {key!r}")
    values = {}
    for key, value in d.items():
        try:
            values[key] = checks[key](value)
        except _Bad as e:
            raise ConfigError(f"{source}: key {key!r}: {e}") from None
    return values


class _Pairs(list):
    """A JSON object as its (key, value) pairs in file order, so that a repeated key is seen."""


def _strict_json(value: Any, where: str = "") -> Any:
    """Objects as dicts; a duplicate key or a non-finite number (``Infinity``, ``NaN``) is refused by key.

    Python's json module takes the last of duplicate keys silently (``"epochs": 7`` then
    ``"epochs": 100000`` ran 100000 epochs) and reads ``Infinity``/``NaN``, which JSON does not allow.
    """
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for key, item in value:
            name = f"{where}.{key}" if where else key
            if key in out:
                raise _Bad(f"key {name!r}: duplicate key (given twice; refusing to guess which one counts)")
            out[key] = _strict_json(item, name)
        return out
    if isinstance(value, list):
        return [_strict_json(item, where) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(f"key {where!r}: {_JSON_CONSTANT[str(value)]} is not a finite number")
    return value


_JSON_CONSTANT = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is JSON when it parses, else a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = _strict_json(json.loads(raw, object_pairs_hook=_Pairs), key)
    except json.JSONDecodeError:
        value = raw
    except _Bad as e:
        raise ConfigError(f"--set {item!r}: {e}") from None
    return key, value


# ---------------------------------------------------------------- type checks


class _Bad(Exception):
    pass


def _name(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"


def _int(lo: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"expected an integer, got {_name(v)}")
        if lo is not None and v < lo:
            raise _Bad(f"must be >= {lo}, got {v}")
        return v

    return check


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"expected a number, got {_name(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise _Bad(f"must be a finite number, got {v}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise _Bad(f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise _Bad(f"must be <= {hi}, got {v}")
        return v

    return check


def _str(choices: tuple[str, ...] | None = None, optional: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise _Bad(f"expected a string{' or null' if optional else ''}, got {_name(v)}")
        if choices is not None and v not in choices:
            raise _Bad(f"must be one of {list(choices)}, got {v!r}")
        if choices is None and not v.strip():
            raise _Bad("must not be empty")
        return v

    return check


def _exact(value: int, why: str) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        v = _int()(v)
        if v != value:
            raise _Bad(f"must be {value} ({why}), got {v}")
        return v

    return check


def _val_metrics(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(m, str) for m in v):
        raise _Bad(f"expected a list of metric names, got {_name(v)}")
    for m in v:
        if m not in VAL_METRICS:
            raise _Bad(f"unknown metric {m!r}; valid: {list(VAL_METRICS)}")
    return tuple(v)


def _save_model(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip():
        return v
    raise _Bad(f"expected true, false or a file path, got {_name(v)}")


def _device(v: Any) -> str:
    if not isinstance(v, str) or not DEVICE_RE.match(v):
        raise _Bad(f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
    return v


def _model(v: Any) -> str:
    if not isinstance(v, str) or v not in MODELS:
        raise _Bad(f"must be one of {sorted(MODELS)}, got {v!r}")
    return v


def _width(v: Any) -> int | None:
    if v is None:
        return None
    v = _int(1)(v)
    if v > MAX_WIDTH:
        raise _Bad(f"must be <= {MAX_WIDTH} (a {v}-wide network would not fit in memory), got {v}")
    return v


def _image_size(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v)
    ):
        raise _Bad(f"expected null, a positive integer or [height, width], got {_name(v)}")
    return (v[0], v[1])


def _augment(v: Any) -> AugmentConfig | None:
    try:
        return AugmentConfig.from_value(v)
    except (TypeError, ValueError) as e:
        raise _Bad(str(e)) from None


def _patience(v: Any) -> int | None:
    return None if v is None else _int(1)(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {_name(v)}")
    return v


def _spacing(v: Any) -> float | None:
    if v is None:
        return None
    v = _float(0.0, 10.0, lo_open=True)(v)
    return v


def _provenance(v: Any) -> dict[str, str] | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise _Bad(f'expected null or an object of strings (e.g. {{"data": "..."}}), got {_name(v)}')
    return dict(v)


def _window(v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise _Bad(f"expected [low, high] in HU, got {_name(v)}")
    lo, hi = (_float()(x) for x in v)
    if not hi > lo:
        raise _Bad(f"high must be above low, got {v}")
    return (lo, hi)


def _threshold(v: Any) -> float:
    v = _float(0.0, 1.0, lo_open=True)(v)
    if v >= 1.0:
        raise _Bad(f"must be strictly between 0 and 1, got {v}")
    return v


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "model": _model,
    "in_dim": _exact(1, "slices are single-channel gray"),
    "out_dim": _exact(1, "one liver probability per pixel"),
    "out_activation": _str(ACTIVATIONS),
    "tdata_x_path": _str(),
    "tdata_y_path": _str(optional=True),
    "vdata_x_path": _str(),
    "vdata_y_path": _str(optional=True),
    "lr": _float(0.0),
    "optim": _str(OPTIMIZERS),
    "loss": _str(LOSSES),
    "train_batch_size": _int(1),
    "valid_batch_size": _int(1),
    "epochs": _int(1),
    "val_metrics": _val_metrics,
    "save_model": _save_model,
    "seed": _int(0),
    "num_workers": _int(0),
    "device": _device,
    "output_dir": _str(),
    "width": _width,
    "image_size": _image_size,
    "normalize": _str(NORMALIZATIONS),
    "augment": _augment,
    "amp": _str(AMP_MODES),
    "resume": _str(optional=True),
    "init_from": _str(optional=True),
    "keep_best": _str(BEST_METRICS),
    "early_stopping": _patience,
    "min_delta": _float(0.0),
    "data_root": _str(optional=True),
    "threshold": _threshold,
    "deterministic": _bool,
    "sync_batchnorm": _bool,
    "weight_decay": _float(0.0),
    "lr_schedule": _str(LR_SCHEDULES),
    "pixel_spacing_mm": _spacing,
    "window_hu": _window,
    "provenance": _provenance,
}
assert set(_CHECKS) == {f.name for f in fields(TrainConfig)}, "every config key needs a type check"
