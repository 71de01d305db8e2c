"""Test-set evaluation, as the study's ``main.py test`` did, from a self-describing checkpoint.

Each slice goes through ``Checkpoint.build_pipeline()`` at its native size (the
pipeline resizes, pads and crops as the checkpoint's preprocessing says), the mask is
exactly ``probability > threshold`` with the checkpoint's threshold, and the metrics
are :class:`liverseg.core.metrics.SegmentationMetrics`: per image, then averaged (macro,
the study's mPA and mIoU), plus the pooled (micro) values. Inference compares its
numbers with these, so nothing here may differ from that definition.

:func:`evaluate_study` computes what the study's own code printed, on request and for
its configs: the network in train mode (BatchNorm on each batch's statistics; the study
never called ``model.eval()``) and :class:`StudyBatchMetrics` (one confusion matrix per
batch, float32, 0/0 = NaN). :data:`STUDY_WHY` is the one line that says why its numbers
differ from the eval-mode ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from liverseg.core.batching import consecutive_batches
from liverseg.core.images import DataError, Sample, read_pair
from liverseg.core.metrics import EMPTY_RULE_TEXT, METRIC_NAMES, SegmentationMetrics, StudyBatchMetrics, scores
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
    s: Sample, img: np.ndarray, truth: np.ndarray, pred: np.ndarray, cm: tuple[int, int, int, int], empty: str
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
        **scores(tp, fp, fn, tn, empty=empty),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


STUDY_WHY = (
    "where the two differ, it is because the study's code never put the model in eval mode (BatchNorm used each "
    "batch's statistics) and pooled one confusion matrix per batch (0/0 = NaN); liverseg's are eval mode, per image"
)


def _predicted_batches(
    ckpt: Checkpoint, samples: list[Sample], device: str, batch_size: int, progress: bool, study: bool
) -> Iterator[tuple[list[tuple[Sample, np.ndarray, np.ndarray]], np.ndarray]]:
    """(batch of (sample, image, truth), boolean predictions [N, H, W]), batches of one image size."""
    if not samples:
        raise DataError("no test samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    pipeline = ckpt.build_pipeline().to(dev).eval()
    if study:
        pipeline.train()  # BatchNorm on the batch's statistics, as the study's test ran
    # closed on an error too, so the error line does not continue the bar's line
    with tqdm(total=len(samples), desc="evaluating", unit="img", disable=not progress, leave=False) as bar:
        for chunk in consecutive_batches(_read_pairs(samples), _image_shape, batch_size):  # one size per batch
            x = torch.from_numpy(np.stack([c[1] for c in chunk]))[:, None].to(dev, non_blocking=True)  # [N,1,H,W]
            _, mask = pipeline(x)  # mask = probability > threshold, uint8
            yield chunk, mask[:, 0].bool().cpu().numpy()
            bar.update(len(chunk))


@torch.no_grad()  # not inference_mode: train-mode BatchNorm updates its running statistics in place
def evaluate(
    checkpoint: str | os.PathLike | Checkpoint,
    samples: list[Sample],
    *,
    device: str = "auto",
    batch_size: int = 4,
    progress: bool = True,
    empty: str = "rule",
) -> dict[str, Any]:
    """``SegmentationMetrics(empty=empty).compute()`` over ``samples`` plus ``per_image`` (one dict per slice)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    metrics = SegmentationMetrics(empty=empty)
    per_image: list[dict[str, Any]] = []
    for chunk, preds in _predicted_batches(ckpt, samples, device, batch_size, progress, study=False):
        for (s, img, truth), pred in zip(chunk, preds):
            metrics.update(pred, truth)
            per_image.append(_image_row(s, img, truth, pred, metrics.per_image[-1], empty))
    out: dict[str, Any] = metrics.compute()
    out["empty_masks"] = f"{empty}: {EMPTY_RULE_TEXT[empty]}"
    out["per_image"] = per_image
    return out


@torch.no_grad()
def evaluate_study(
    checkpoint: str | os.PathLike | Checkpoint,
    samples: list[Sample],
    *,
    device: str = "auto",
    batch_size: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """mPA and mIoU with the study's semantics (module docstring): ``{"mPA", "mIoU", "n_batches", ...}``."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    metrics = StudyBatchMetrics()
    for chunk, preds in _predicted_batches(ckpt, samples, device, batch_size, progress, study=True):
        metrics.update(preds, np.stack([c[2] for c in chunk]))
    return {
        **metrics.compute(),
        "batch_size": batch_size,
        "semantics": "study: train-mode BatchNorm, one confusion matrix per batch in float32, 0/0 = NaN",
    }


def format_table(result: dict[str, Any]) -> str:
    """The metrics as a small text table: macro (per image, averaged) and micro (pooled)."""
    lines = [f"{'metric':<10} {'macro':>8} {'micro':>8}", "-" * 28]
    for name in ("mPA", "mIoU", *[m for m in METRIC_NAMES if m not in ("mPA", "mIoU")]):
        lines.append(f"{name:<10} {result[name]:>8.4f} {result['micro_' + name]:>8.4f}")
    lines.append(f"{result['n_images']} image(s); macro = per image, then averaged (the study's way)")
    if "empty_masks" in result:
        lines.append(f"empty masks: {result['empty_masks']}")
    return "\n".join(lines)


def format_study(study: dict[str, Any], ours: dict[str, Any]) -> str:
    """The study-semantics numbers beside the eval-mode ones, and the line that says why they differ."""
    lines = [f"{'metric':<10} {'study':>8} {'eval':>8}", "-" * 28]
    for name in ("mPA", "mIoU"):
        lines.append(f"{name:<10} {study[name]:>8.4f} {ours[name]:>8.4f}")
    lines.append(STUDY_WHY)
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


__all__ = ["STUDY_WHY", "evaluate", "evaluate_study", "format_study", "format_table", "checkpoint_info"]
