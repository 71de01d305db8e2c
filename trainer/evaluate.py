"""Test-set evaluation, as the study's ``main.py test`` did, from a self-describing checkpoint.

Each slice goes through ``Checkpoint.build_pipeline()`` at its native size (the
pipeline resizes, pads and crops as the checkpoint's preprocessing says), the mask is
exactly ``probability > threshold`` with the checkpoint's threshold, and the metrics
are :class:`liverseg.core.metrics.SegmentationMetrics`: per image, then averaged (macro,
the study's mPA and mIoU), plus the pooled (micro) values. Inference compares its
numbers with these, so nothing here may differ from that definition.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from liverseg.core.batching import consecutive_batches
from liverseg.core.data import DataError, Sample, read_pair
from liverseg.core.metrics import METRIC_NAMES, SegmentationMetrics, scores
from liverseg.models.checkpoint import Checkpoint, load_checkpoint
from liverseg.trainer.train import resolve_device


def _read_pairs(samples: list[Sample]) -> Iterator[tuple[Sample, np.ndarray, np.ndarray]]:
    """(sample, image, mask) of each sample, read once, in order."""
    for s in samples:
        try:
            img, mask = read_pair(s)
        except DataError as e:  # read_pair already names the file and where it was listed
            raise DataError(f"test data: {e}") from None
        yield s, img, mask


def _image_shape(item: tuple[Sample, np.ndarray, np.ndarray]) -> tuple[int, ...]:
    return tuple(item[1].shape)


def _image_row(
    s: Sample, img: np.ndarray, truth: np.ndarray, pred: np.ndarray, cm: tuple[int, int, int, int]
) -> dict[str, Any]:
    """One slice's entry of ``per_image``: where it came from, its size, liver fractions and scores."""
    tp, fp, fn, tn = cm
    return {
        "image": str(s.image),
        "mask": str(s.mask),
        "origin": s.origin,
        "height": int(img.shape[0]),
        "width": int(img.shape[1]),
        "liver_fraction": float(truth.mean()),
        "predicted_fraction": float(pred.mean()),
        **scores(tp, fp, fn, tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


@torch.inference_mode()
def evaluate(
    checkpoint: str | os.PathLike | Checkpoint,
    samples: list[Sample],
    *,
    device: str = "auto",
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """``SegmentationMetrics.compute()`` over ``samples`` plus ``per_image`` (one dict per slice)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if not samples:
        raise DataError("no test samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    pipeline = ckpt.build_pipeline().to(dev).eval()
    metrics = SegmentationMetrics()
    per_image: list[dict[str, Any]] = []
    # closed on an error too, so the error line does not continue the bar's line
    with tqdm(total=len(samples), desc="evaluating", unit="img", disable=not progress, leave=False) as bar:
        for chunk in consecutive_batches(_read_pairs(samples), _image_shape, batch_size):  # one size per batch
            x = torch.from_numpy(np.stack([c[1] for c in chunk]))[:, None].to(dev, non_blocking=True)  # [N,1,H,W]
            _, mask = pipeline(x)  # mask = probability > threshold, uint8
            preds = mask[:, 0].bool().cpu().numpy()
            for (s, img, truth), pred in zip(chunk, preds):
                metrics.update(pred, truth)
                per_image.append(_image_row(s, img, truth, pred, metrics.per_image[-1]))
            bar.update(len(chunk))
    out: dict[str, Any] = metrics.compute()
    out["per_image"] = per_image
    return out


def format_table(result: dict[str, Any]) -> str:
    """The metrics as a small text table: macro (per image, averaged) and micro (pooled)."""
    lines = [f"{'metric':<10} {'macro':>8} {'micro':>8}", "-" * 28]
    for name in ("mPA", "mIoU", *[m for m in METRIC_NAMES if m not in ("mPA", "mIoU")]):
        lines.append(f"{name:<10} {result[name]:>8.4f} {result['micro_' + name]:>8.4f}")
    lines.append(f"{result['n_images']} image(s); macro = per image, then averaged (the study's way)")
    return "\n".join(lines)


def checkpoint_info(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "path": str(ckpt.path) if ckpt.path else None,
        "model": {"name": ckpt.model_name, "args": ckpt.model_args},
        "epoch": ckpt.epoch,
        "threshold": ckpt.threshold,
        "preprocessing": ckpt.preprocessing.to_dict(),
        "best": ckpt.best,
    }


__all__ = ["evaluate", "format_table", "checkpoint_info"]
