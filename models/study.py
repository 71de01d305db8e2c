"""The original study's checkpoints: its ``trained_model.pth`` as a self-describing liverseg checkpoint.

The study saved ``torch.save(model.state_dict(), "train_output/trained_model.pth")``: a
plain state dict of its final epoch, nothing else. :func:`convert_study_state_dict`
turns one into liverseg's weights:

* **baseline**: the same attribute names (``conv1``..``conv5``, ``output``), copied as they are;
* **U-Net**: ``input_block`` -> ``inc``, ``down_block_k`` -> ``down{k}.conv``,
  ``up_block_k.upscale`` -> ``up{k}.up``, ``up_block_k`` -> ``up{k}.conv``,
  ``output_block`` -> ``outc.conv``; inside a block ``conv_1``/``batchnorm_1``/
  ``conv_2``/``batchnorm_2`` -> ``block.0``/``block.1``/``block.3``/``block.4``. The
  study's 3x3 convolutions have a bias and liverseg's (followed by BatchNorm) do not:
  the bias folds exactly into the BatchNorm running mean, ``mean' = mean - bias``
  (in eval mode ``BN(conv + b) = gamma (conv - (mean - b)) / sqrt(var + eps) + beta``;
  in train mode the batch mean absorbs ``b`` either way).

:func:`import_study` wraps the weights in a :class:`Checkpoint` with the study's
preprocessing (gray /255, no resizing), threshold 0.5 and the provenance (file, its
SHA-256, the conversion) under ``config["imported_from"]``. :func:`load_model_file`
reads either kind of file, so every command that takes a checkpoint can take a study
``.pth`` too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from liverseg.core.contract import file_sha256
from liverseg.core.errors import CheckpointError
from liverseg.core.preprocess import Preprocessing
from liverseg.models import required_multiple
from liverseg.models.checkpoint import FORMAT, Checkpoint, load_checkpoint, read_weights_only

STUDY_MODELS = ("unet", "baseline")
# The first convolution of each model: its weight gives in_channels and the width.
_FIRST_CONV = {"unet": "input_block.conv_1.weight", "baseline": "conv1.weight"}
_BLOCK_PART = {"conv_1": "block.0", "batchnorm_1": "block.1", "conv_2": "block.3", "batchnorm_2": "block.4"}
_UNET_KEY = re.compile(r"^(input_block|down_block_(\d)|up_block_(\d))\.(conv_[12]|batchnorm_[12]|upscale)\.(\w+)$")
_OUTPUT_KEY = {"unet": "output_block", "baseline": "output"}
CONVERSION = {
    "unet": "keys mapped to liverseg's U-Net; the 3x3 conv biases folded into the BatchNorm running means",
    "baseline": "keys unchanged (liverseg's baseline has the study's names)",
}


def study_model_of(state_dict: dict[str, Any]) -> str | None:
    """``"unet"`` or ``"baseline"`` by the keys of a study state dict, else None."""
    for name, key in _FIRST_CONV.items():
        if key in state_dict:
            return name
    return None


def study_model_args(state_dict: dict[str, torch.Tensor], model: str) -> dict[str, int]:
    """liverseg model arguments from the shapes of the first and last convolutions."""
    first = state_dict[_FIRST_CONV[model]]
    last = state_dict.get(f"{_OUTPUT_KEY[model]}.weight")
    out = int(last.shape[0]) if isinstance(last, torch.Tensor) else 1
    return {"in_channels": int(first.shape[1]), "out_channels": out, "width": int(first.shape[0])}


def _unet_key(key: str) -> str:
    """The liverseg name of one study U-Net key; CheckpointError for a key the study never had."""
    if key.startswith("output_block."):
        return "outc.conv." + key.split(".", 1)[1]
    m = _UNET_KEY.match(key)
    if m is None:
        raise CheckpointError(f"unexpected key {key!r} for the study's U-Net")
    block, down, up, part, leaf = m.groups()
    if up is not None:
        prefix = f"up{up}.up" if part == "upscale" else f"up{up}.conv.{_BLOCK_PART[part]}"
        return f"{prefix}.{leaf}"
    if part == "upscale":
        raise CheckpointError(f"unexpected key {key!r}: only up blocks have an upscale")
    base = "inc" if block == "input_block" else f"down{down}.conv"
    return f"{base}.{_BLOCK_PART[part]}.{leaf}"


def convert_study_state_dict(state_dict: dict[str, torch.Tensor], model: str) -> dict[str, torch.Tensor]:
    """liverseg weights of the study's ``model`` (mapping in the module docstring)."""
    if model == "baseline":
        return {k: v.detach().clone() for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if re.search(r"\.conv_[12]\.bias$", key):
            continue  # folded into the running mean below
        out[_unet_key(key)] = value.detach().clone()
    for key, bias in state_dict.items():
        m = re.match(r"^(.*)\.conv_([12])\.bias$", key)
        if m is None:
            continue
        mean_key = f"{m.group(1)}.batchnorm_{m.group(2)}.running_mean"
        if mean_key not in state_dict:
            raise CheckpointError(f"{key} has no BatchNorm running mean {mean_key!r} to fold into")
        out[_unet_key(mean_key)] = state_dict[mean_key].detach().clone() - bias.detach()
    return out


def _check_study_dict(d: object, path: Path, model: str | None) -> str:
    """The study model a loaded object is the state dict of; CheckpointError otherwise."""
    if not isinstance(d, dict) or not d or not all(isinstance(v, torch.Tensor) for v in d.values()):
        kind = f"dict with keys {sorted(map(str, d))[:6]}" if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"{path}: neither a liverseg checkpoint nor a study state dict of tensors (found {kind})")
    found = study_model_of(d)
    if found is None:
        raise CheckpointError(
            f"{path}: a state dict, but not of the study's U-Net or baseline "
            f"(no {' or '.join(repr(k) for k in _FIRST_CONV.values())}; first keys {list(d)[:4]})"
        )
    if model is not None and model != found:
        raise CheckpointError(f"{path}: holds the study's {found}, but --model/model says {model!r}")
    return found


def import_study(path: str | os.PathLike, model: str | None = None) -> Checkpoint:
    """A study ``trained_model.pth`` as a liverseg :class:`Checkpoint` (in memory; ``.save`` writes it)."""
    path = Path(path)
    if model is not None and model not in STUDY_MODELS:
        raise CheckpointError(f"the study had no model {model!r}; valid: {', '.join(STUDY_MODELS)}")
    d = _torch_load(path)
    name = _check_study_dict(d, path, model)
    return _wrap(d, name, path)


def _wrap(state_dict: dict[str, torch.Tensor], name: str, path: Path) -> Checkpoint:
    args = study_model_args(state_dict, name)
    ckpt = Checkpoint(
        model_name=name,
        model_args=args,
        preprocessing=Preprocessing(normalize="scale", size=None, pad_multiple=required_multiple(name)),
        state_dict=convert_study_state_dict(state_dict, name),
        threshold=0.5,
        config={
            "imported_from": {
                "kind": "study state dict (Dubois & Dzadon 2024, train_output/trained_model.pth)",
                "file": str(path),
                "sha256": file_sha256(path),
                "model": name,
                "conversion": CONVERSION[name],
                "epoch": "the study's final epoch (it kept no best-epoch checkpoint)",
                "preprocessing": "convert('L'), /255, no resizing (the study's code; no z-score)",
            }
        },
        path=path,
    )
    ckpt.build_model()  # every key must fit: CheckpointError naming the file otherwise
    return ckpt


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" if not path.exists() else f"{path}: not a file")
    return read_weights_only(path)  # a pickle holding code or objects is refused for safety, in plain words


def load_model_file(path: str | os.PathLike, model: str | None = None) -> Checkpoint:
    """A liverseg checkpoint, or a study ``.pth`` imported on the fly (``model`` must then agree)."""
    path = Path(path)
    d = _torch_load(path)
    if isinstance(d, dict) and d.get("format") == FORMAT:
        ckpt = load_checkpoint(path)
        if model is not None and model != ckpt.model_name:
            raise CheckpointError(f"{path}: holds a {ckpt.model_name}, but model says {model!r}")
        return ckpt
    return _wrap(d, _check_study_dict(d, path, model), path)


def is_imported(ckpt: Checkpoint) -> bool:
    """True for a checkpoint that came from a study ``.pth``."""
    return isinstance(ckpt.config.get("imported_from"), dict)


__all__ = [
    "CONVERSION",
    "STUDY_MODELS",
    "convert_study_state_dict",
    "import_study",
    "is_imported",
    "load_model_file",
    "study_model_args",
    "study_model_of",
]
