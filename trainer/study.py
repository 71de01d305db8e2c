"""The study's test and predict configs, verbatim, and what its ``main.py test|pred`` wrote.

The study ran ``python main.py test`` with ``configs/test_config.json``::

    model, in_dim, out_dim, out_activation, model_path, data_x_path, data_y_path,
    batch_size, test_metrics (["mPA", "mIoU"]), save_metrics

and ``python main.py pred`` with ``configs/pred_config.json``::

    model, model_path, in_dim, out_dim, out_activation, threshold, image_in_path, image_out_path

Such files load unchanged (:class:`StudyTestConfig`, :class:`StudyPredConfig`); an
unknown key or a wrong type names the key. ``model_path`` may be a study ``.pth`` or a
liverseg checkpoint. Relative paths resolve as the study's did, against the current
directory (then, as liverseg's train config, beside the config file); the outputs go
where the study wrote them: ``test_output/metric_values.csv`` and ``image_out_path``,
relative to the current directory.

A study config runs with the study's semantics (:func:`liverseg.trainer.evaluate.evaluate_study`):
its numbers are the study's, and the eval-mode, per-image numbers are printed beside
them and written to ``test_output/metrics.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from liverseg.core.errors import ConfigError
from liverseg.core.files import write_text_atomic
from liverseg.core.images import discover, read_image
from liverseg.models.study import STUDY_MODELS, load_model_file
from liverseg.trainer.config import (
    _Bad,
    _bool,
    _device,
    _exact,
    _int,
    _Pairs,
    _str,
    _strict_json,
    _threshold,
    checked_keys,
    resolve_config_path,
)
from liverseg.trainer.evaluate import STUDY_WHY, checkpoint_info, evaluate, evaluate_study
from liverseg.trainer.predict import predict_probability, write_mask

TEST_OUTPUT = Path("test_output")  # where the study's test mode wrote metric_values.csv (cwd-relative)
STUDY_TEST_METRICS = ("mPA", "mIoU")


def _metrics(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(m, str) for m in v):
        raise _Bad(f"expected a non-empty list of metric names, got {type(v).__name__} {v!r}")
    bad = [m for m in v if m not in STUDY_TEST_METRICS]
    if bad:
        raise _Bad(f"unknown metric(s) {bad}; the study's test computed {list(STUDY_TEST_METRICS)}")
    return tuple(v)


_COMMON: dict[str, Callable[[Any], Any]] = {
    "model": _str(STUDY_MODELS),
    "in_dim": _exact(1, "slices are single-channel gray"),
    "out_dim": _exact(1, "one liver probability per pixel"),
    "out_activation": _str(("sigmoid",)),
    "model_path": _str(),
    "device": _device,  # liverseg's extension: auto | cpu | cuda | cuda:N
}


def _load(cls: type, path: Path, checks: dict[str, Callable[[Any], Any]], paths: tuple[str, ...]) -> Any:
    """Read ``path`` (JSON object), check every key by name, resolve ``paths``, build ``cls``."""
    try:  # duplicate keys and Infinity/NaN are refused by key, as for training configs
        d = _strict_json(json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_Pairs))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except _Bad as e:
        raise ConfigError(f"{path}: {e}") from None
    required = [f.name for f in fields(cls) if f.default is _REQUIRED]
    values = checked_keys(d, [f.name for f in fields(cls)], required, checks, str(path))
    for key in paths:
        if isinstance(values.get(key), str):
            values[key] = resolve_config_path(values[key], path.parent)
    return cls(**values)


_REQUIRED: Any = "<required>"  # the default of the keys every study file has (a sentinel)


@dataclass(frozen=True)
class StudyTestConfig:
    """``configs/test_config.json`` of the study."""

    model: str = _REQUIRED
    model_path: str = _REQUIRED
    data_x_path: str = _REQUIRED
    data_y_path: str | None = None
    in_dim: int = 1
    out_dim: int = 1
    out_activation: str = "sigmoid"
    batch_size: int = 1
    test_metrics: tuple[str, ...] = STUDY_TEST_METRICS
    save_metrics: bool = True
    device: str = "auto"

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> StudyTestConfig:
        checks = {
            **_COMMON,
            "data_x_path": _str(),
            "data_y_path": _str(optional=True),
            "batch_size": _int(1),
            "test_metrics": _metrics,
            "save_metrics": _bool,
        }
        return _load(cls, Path(path), checks, ("model_path", "data_x_path", "data_y_path"))


@dataclass(frozen=True)
class StudyPredConfig:
    """``configs/pred_config.json`` of the study."""

    model: str = _REQUIRED
    model_path: str = _REQUIRED
    image_in_path: str = _REQUIRED
    image_out_path: str = _REQUIRED
    in_dim: int = 1
    out_dim: int = 1
    out_activation: str = "sigmoid"
    threshold: float = 0.5
    device: str = "auto"

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> StudyPredConfig:
        checks = {**_COMMON, "threshold": _threshold, "image_in_path": _str(), "image_out_path": _str()}
        return _load(cls, Path(path), checks, ("model_path", "image_in_path"))


def is_study_config(path: Path) -> str | None:
    """``"test"`` or ``"pred"`` for a JSON file holding the study's test or predict keys, else None."""
    if path.suffix.lower() != ".json":
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "test"  # a .json given as a checkpoint: let the config loader name the problem
    if isinstance(d, dict) and "image_in_path" in d:
        return "pred"
    return "test"


# ---------------------------------------------------------------- running them


def write_metric_values(values: dict[str, float], names: tuple[str, ...], path: Path) -> Path:
    """The study's ``metric_values.csv``: an unnamed index column, then the metrics, one row."""
    df = pd.DataFrame([{n: values[n] for n in names}])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, df.to_csv())
    return path


def run_test_config(cfg: StudyTestConfig, source: Path, progress: bool = True) -> dict[str, Any]:
    """The study's ``main.py test``: study-semantics metrics, eval-mode beside them, files as it wrote."""
    ckpt = load_model_file(cfg.model_path, model=cfg.model)
    samples = discover(cfg.data_x_path, labels=cfg.data_y_path, need_labels=True)
    study = evaluate_study(ckpt, samples, device=cfg.device, batch_size=cfg.batch_size, progress=progress)
    ours = evaluate(ckpt, samples, device=cfg.device, batch_size=cfg.batch_size, progress=progress)
    doc: dict[str, Any] = {
        "config": str(source),
        "checkpoint": checkpoint_info(ckpt),
        "study_semantics": study,
        "eval_mode": {k: v for k, v in ours.items() if k != "per_image"},
        "why_they_differ": STUDY_WHY,
        "per_image": ours["per_image"],
        "written": [],
    }
    if cfg.save_metrics:
        csv = write_metric_values(study, cfg.test_metrics, TEST_OUTPUT / "metric_values.csv")
        js = TEST_OUTPUT / "metrics.json"
        doc["written"] = [str(csv), str(js)]
        write_text_atomic(js, json.dumps(doc, indent=2, default=float) + "\n")
    return doc


def run_pred_config(cfg: StudyPredConfig) -> dict[str, Any]:
    """The study's ``main.py pred``: one 0/255 mask at ``image_out_path`` (study semantics), and the eval-mode count."""
    from liverseg.trainer.train import resolve_device

    dev = str(resolve_device(cfg.device))
    ckpt = load_model_file(cfg.model_path, model=cfg.model)
    image = read_image(cfg.image_in_path)
    prob = predict_probability(ckpt, image, dev, study=True)
    out = write_mask(prob, cfg.threshold, Path(cfg.image_out_path))
    study = prob > cfg.threshold
    ours = predict_probability(ckpt, image, dev, study=False) > cfg.threshold
    return {
        "written": str(out),
        "liver_pixels": int(study.sum()),
        "liver_pixels_eval_mode": int(ours.sum()),
        "pixels_differing": int((study != ours).sum()),
    }


__all__ = [
    "STUDY_TEST_METRICS",
    "StudyPredConfig",
    "StudyTestConfig",
    "is_study_config",
    "run_pred_config",
    "run_test_config",
    "write_metric_values",
]
