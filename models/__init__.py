"""Model registry: ``create_model(name, **args)``; the config's ``"model"`` maps onto it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from liverseg.core.errors import ConfigError
from liverseg.models.baseline import BaselineCNN
from liverseg.models.pipeline import SegmentationPipeline
from liverseg.models.unet import UNet

MODELS: dict[str, type[UNet] | type[BaselineCNN]] = {
    "unet": UNet,
    "baseline": BaselineCNN,
}

# Widths that reproduce the study when no width is given (U-Net 64-...-1024, baseline 64-128-256-128-64).
DEFAULT_WIDTH = {"unet": 64, "baseline": 64}
# The largest base width: a 256-wide U-Net has 16x the study's 31 M parameters (2 GB of float32
# weights); 3000 would ask for hundreds of GB before the first error.
MAX_WIDTH = 256
# Allowed range of every model argument (both networks take one gray channel and give one logit map,
# which the preprocessing, the exported pipeline and the metrics assume).
ARG_RANGES: dict[str, tuple[int, int]] = {"in_channels": (1, 1), "out_channels": (1, 1), "width": (1, MAX_WIDTH)}


def create_model(name: str, **args: Any) -> nn.Module:
    """Build a registered model; an unknown name lists the valid ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}") from None
    return factory(**check_model_args(name, args))


def check_model_args(name: str, args: Mapping[str, Any]) -> dict[str, int]:
    """The arguments of registered model ``name``, checked by :data:`ARG_RANGES`; a ConfigError names the argument."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    valid = [p for p in inspect.signature(MODELS[name]).parameters if p in ARG_RANGES]
    out: dict[str, int] = {}
    for key, value in args.items():
        if key not in valid:
            raise ConfigError(f"model {name!r} has no argument {key!r}; valid: {', '.join(valid)}")
        lo, hi = ARG_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"model argument {key!r} must be an integer, got {type(value).__name__} {value!r}")
        if not lo <= value <= hi:
            allowed = f"{lo}" if lo == hi else f"between {lo} and {hi}"
            raise ConfigError(f"model argument {key!r} must be {allowed}, got {value}")
        out[key] = value
    return out


def required_multiple(name: str) -> int:
    """H and W of the network input must be multiples of this (the preprocessing pads)."""
    return MODELS[name].required_multiple


__all__ = [
    "MODELS",
    "DEFAULT_WIDTH",
    "MAX_WIDTH",
    "ARG_RANGES",
    "check_model_args",
    "create_model",
    "required_multiple",
    "UNet",
    "BaselineCNN",
    "SegmentationPipeline",
]
