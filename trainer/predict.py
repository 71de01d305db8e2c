"""``liverseg-predict IMAGE --model M -o MASK.png``: one slice's liver mask, from any model file.

The model is a liverseg checkpoint, a study ``trained_model.pth`` (imported on the fly)
or an exported ``.onnx`` (run by ONNX Runtime with the preprocessing inside it). The
image is read by :func:`liverseg.core.images.read_image` (gray as Pillow's ``convert("L")``,
the study's reading); the mask is 255 where the probability exceeds the threshold, as
the study's ``main.py pred`` wrote it, at the image's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverseg.core.contract import INPUT_NAME, PROB_NAME, contract_from_metadata
from liverseg.core.engine import EngineOptions, open_engine
from liverseg.core.errors import UsageError
from liverseg.core.files import write_bytes_atomic
from liverseg.core.images import read_image
from liverseg.core.png import encode_mask_png
from liverseg.models.checkpoint import Checkpoint
from liverseg.models.study import load_model_file


@torch.no_grad()  # not inference_mode: train-mode BatchNorm updates its running statistics in place
def predict_probability(ckpt: Checkpoint, image: np.ndarray, device: str = "cpu", study: bool = False) -> np.ndarray:
    """float32 [H, W] liver probability of one uint8 [H, W] slice; ``study``: BatchNorm on this image."""
    pipeline = ckpt.build_pipeline().to(device).eval()
    if study:
        pipeline.train()
    prob, _ = pipeline(torch.from_numpy(np.ascontiguousarray(image).copy())[None, None].to(device))
    return prob[0, 0].cpu().numpy()


def write_mask(prob: np.ndarray, threshold: float, path: Path) -> Path:
    """The study's prediction PNG: 255 where probability > threshold, else 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, encode_mask_png(np.where(prob > threshold, 255, 0).astype(np.uint8)))
    return path


def _onnx_probability(model: Path, image: np.ndarray, device: str) -> tuple[np.ndarray, float]:
    """Probability [H, W] from an exported model, and the threshold of its contract."""
    kind, _, index = device.partition(":")
    engine = open_engine(model, EngineOptions(device=kind, device_id=int(index or 0)))
    contract = contract_from_metadata(engine.metadata(), str(model))
    if contract.get("input_kind") != "uint8":
        raise UsageError(f"{model}: takes {contract.get('input_kind')} input; liverseg-predict reads 8-bit slices")
    prob = engine.run({INPUT_NAME: image[None, None]}, [PROB_NAME])[0]
    return np.asarray(prob[0, 0], dtype=np.float32), float(contract.get("threshold", 0.5))


def predict_file(
    image_path: Path,
    model: Path,
    output: Path,
    *,
    threshold: float | None = None,
    study: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Write ``output`` (0/255 PNG) for ``image_path``; ``{"written", "liver_pixels", "how"}``."""
    image = read_image(image_path)
    if model.suffix.lower() == ".onnx":
        if study:
            raise UsageError(f"{model}: --study-semantics needs the network's BatchNorm (a checkpoint), not ONNX")
        prob, thr = _onnx_probability(model, image, device)
        how = f"ONNX Runtime, {model.name}"
    else:
        from liverseg.trainer.train import resolve_device

        ckpt = load_model_file(model)
        prob = predict_probability(ckpt, image, str(resolve_device(device)), study=study)
        thr = ckpt.threshold
        how = f"{ckpt.model_name} {'train-mode BatchNorm (the study)' if study else 'eval mode'}"
    thr = thr if threshold is None else threshold
    write_mask(prob, thr, output)
    return {"written": str(output), "liver_pixels": int((prob > thr).sum()), "how": f"{how}, threshold {thr}"}


__all__ = ["predict_file", "predict_probability", "write_mask"]
