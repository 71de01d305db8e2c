"""Segmentation metrics: the study's mPA and mIoU, and liver Dice/IoU/precision/recall.

Per image we count the binary confusion matrix (TP, FP, FN, TN) with liver as the
positive class. From it:

* mPA  = 1/2 (TP/(TP+FN) + TN/(TN+FP))            -- the study's mean pixel accuracy
* mIoU = 1/2 (TP/(TP+FP+FN) + TN/(TN+FP+FN))       -- the study's mean IoU
* Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), precision = TP/(TP+FP), recall = TP/(TP+FN)

Rule for empty denominators (written here and tested in tests/test_metrics.py):
a ratio whose denominator is 0 means the class is absent from both prediction and
truth in the sense that ratio looks at, so nothing could be got wrong: it is 1.0
when the image has no error that the ratio could have counted, else 0.0. Concretely

* truth and prediction both empty of liver: Dice = IoU = precision = recall = 1;
* prediction empty, truth not: Dice = IoU = recall = 0, precision = 0;
* truth empty, prediction not: Dice = IoU = precision = 0, recall = 0;
* the same rule for the background class inside mPA and mIoU.

The other rule on request (``empty="nan"``, the convention of nnU-Net's evaluation):
a ratio whose denominator is 0 is NaN, and an image whose value is NaN is left out of
that metric's macro mean (``n_nan_<metric>`` counts them); a micro value is NaN only
when the pooled denominator is 0.

"macro" = mean of per-image values (the study's way: per image, then averaged);
"micro" = the same formula on the confusion matrix pooled over all images.

:class:`StudyBatchMetrics` is how the study itself computed mPA and mIoU (on request and
for its configs): one confusion matrix pooled over each *batch*, the two-class means in
float32 with 0/0 = NaN (no rule), then the mean over batches, so one NaN batch makes the
result NaN. With batch size 1 (its test config) a batch is an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METRIC_NAMES = ("dice", "iou", "precision", "recall", "mPA", "mIoU")
# What a 0/0 ratio is: "rule" = 1 when nothing could be got wrong, else 0 (above); "nan" = NaN, left out of means.
EMPTY_RULES = ("rule", "nan")
EMPTY_RULE_TEXT = {
    "rule": "0/0 is 1 when the image has no error that ratio could count, else 0",
    "nan": "0/0 is NaN and the image is left out of that metric's mean (nnU-Net's convention)",
}


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of two boolean arrays of the same shape."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))  # one temporary instead of five
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    tn = int(pred.size - tp - fp - fn)
    return tp, fp, fn, tn


def confusion_counts(pred: Any, truth: Any) -> Any:
    """Per-image ``[N, 4]`` (TP, FP, FN, TN) of boolean batches ``[N, ..., H, W]``.

    Works unchanged on numpy arrays and on torch tensors (on any device: the counts
    stay where the masks are), because it uses only ``&``, ``~``, ``sum`` and
    ``reshape``; the result has the input's array type. ``.tolist()`` gives rows for
    :meth:`SegmentationMetrics.add_confusion`.
    """
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"prediction shape {tuple(pred.shape)} != truth shape {tuple(truth.shape)}")
    n = pred.shape[0]
    p = pred.reshape(n, -1)
    t = truth.reshape(n, -1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = p.shape[1] - tp - fp - fn
    stack = getattr(type(tp), "__module__", "").startswith("torch")
    if stack:
        import torch  # only when given tensors: the numpy path never imports torch

        return torch.stack([tp, fp, fn, tn], 1)
    return np.stack([tp, fp, fn, tn], 1)


def _ratio(num: float, den: float, errors: float, empty: str = "rule") -> float:
    """num/den; with den == 0: NaN for ``empty="nan"``, else 1.0 if there was no error it could see, else 0.0."""
    if den > 0:
        return float(num) / float(den)
    if empty == "nan":
        return float("nan")
    return 1.0 if errors == 0 else 0.0


def scores(tp: float, fp: float, fn: float, tn: float, empty: str = "rule") -> dict[str, float]:
    """All metrics of one confusion matrix, with the empty-mask rule ``empty`` (see above)."""
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}")
    dice = _ratio(2 * tp, 2 * tp + fp + fn, fp + fn, empty)
    iou = _ratio(tp, tp + fp + fn, fp + fn, empty)
    precision = _ratio(tp, tp + fp, fn, empty)
    recall = _ratio(tp, tp + fn, fp, empty)
    pa_fg = _ratio(tp, tp + fn, fp, empty)
    pa_bg = _ratio(tn, tn + fp, fn, empty)
    iou_bg = _ratio(tn, tn + fp + fn, fp + fn, empty)
    return {
        "dice": dice,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "mPA": 0.5 * (pa_fg + pa_bg),
        "mIoU": 0.5 * (iou + iou_bg),
    }


def image_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Metrics of one image from boolean masks."""
    return scores(*confusion(pred, truth))


@dataclass
class SegmentationMetrics:
    """Accumulates per-image confusion matrices; ``compute`` gives macro and micro means."""

    per_image: list[tuple[int, int, int, int]] = field(default_factory=list)
    empty: str = "rule"  # what 0/0 is: EMPTY_RULES

    def __post_init__(self) -> None:
        if self.empty not in EMPTY_RULES:
            raise ValueError(f"empty must be one of {EMPTY_RULES}, got {self.empty!r}")

    def reset(self) -> None:
        self.per_image.clear()

    def update(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Add one image ([H, W]) or a batch ([N, ...]); returns the last image's scores."""
        pred = np.asarray(pred, dtype=bool)
        truth = np.asarray(truth, dtype=bool)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
        batch = pred.reshape(-1, *pred.shape[-2:]) if pred.ndim > 2 else pred[None]
        tbatch = truth.reshape(-1, *truth.shape[-2:]) if truth.ndim > 2 else truth[None]
        last: dict[str, float] = {}
        for p, t in zip(batch, tbatch):
            cm = confusion(p, t)
            self.per_image.append(cm)
            last = scores(*cm, empty=self.empty)
        return last

    def add_confusion(self, tp: int, fp: int, fn: int, tn: int) -> None:
        self.per_image.append((int(tp), int(fp), int(fn), int(tn)))

    def __len__(self) -> int:
        return len(self.per_image)

    def compute(self) -> dict[str, float]:
        """``{name: macro}`` for every metric, plus ``micro_<name>`` and ``n_images``."""
        if not self.per_image:
            return {"n_images": 0}
        per = [scores(*cm, empty=self.empty) for cm in self.per_image]
        out: dict[str, float] = {}
        for name in METRIC_NAMES:
            values = np.array([p[name] for p in per], dtype=np.float64)
            kept = values[~np.isnan(values)]
            out[name] = float(kept.mean()) if kept.size else float("nan")
            if self.empty == "nan":
                out[f"n_nan_{name}"] = int(values.size - kept.size)
        pooled = np.sum(np.array(self.per_image, dtype=np.float64), axis=0)
        out.update(
            {f"micro_{k}": v for k, v in scores(pooled[0], pooled[1], pooled[2], pooled[3], empty=self.empty).items()}
        )
        out["n_images"] = len(self.per_image)
        return out


@dataclass
class StudyBatchMetrics:
    """mPA and mIoU as the study computed them: per batch, float32, 0/0 = NaN, then averaged."""

    per_batch: list[tuple[float, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.per_batch.clear()

    def update(self, pred: Any, truth: Any) -> tuple[float, float]:
        """Add one batch (boolean ``[N, ..., H, W]``); returns its (mPA, mIoU)."""
        tp, fp, fn, tn = (np.float32(v) for v in confusion(pred, truth))
        with np.errstate(divide="ignore", invalid="ignore"):
            pa = np.array([tn / (tn + fp), tp / (tp + fn)], dtype=np.float32)  # classes 0 (background), 1 (liver)
            iou = np.array([tn / (tn + fp + fn), tp / (tp + fp + fn)], dtype=np.float32)
        row = (float(pa.mean(dtype=np.float32)), float(iou.mean(dtype=np.float32)))
        self.per_batch.append(row)
        return row

    def compute(self) -> dict[str, float]:
        """``{"mPA", "mIoU", "n_batches"}``; NaN when any batch had a 0/0 class."""
        if not self.per_batch:
            return {"n_batches": 0}
        arr = np.array(self.per_batch, dtype=np.float64)
        return {"mPA": float(arr[:, 0].mean()), "mIoU": float(arr[:, 1].mean()), "n_batches": len(self.per_batch)}
