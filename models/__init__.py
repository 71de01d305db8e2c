"""Model registry: ``create_model(name, **args)``; the config's ``"model"`` maps onto it."""

from __future__ import annotations

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


def create_model(name: str, **args: Any) -> nn.Module:
    """Build a registered model; an unknown name lists the valid ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}") from None
    try:
        return factory(**args)
    except TypeError as e:
        raise ConfigError(f"bad arguments for model {name!r}: {e}") from None


def required_multiple(name: str) -> int:
    """H and W of the network input must be multiples of this (the preprocessing pads)."""
    return MODELS[name].required_multiple


__all__ = [
    "MODELS",
    "DEFAULT_WIDTH",
    "create_model",
    "required_multiple",
    "UNet",
    "BaselineCNN",
    "SegmentationPipeline",
]
