"""Training: the study's loop (Adam, BCE, per-epoch validation with mPA and mIoU), made
reproducible and self-describing.

One run writes ``<output_dir>/<model>-w<width>-<YYYYmmdd-HHMMSS>/``::

    config.json          the resolved config (width, data_root filled in)
    epochs.csv           epoch, mPA, mIoU, train_loss, val_loss, dice, iou, precision, recall, lr, seconds
    checkpoints/best.pt  the epoch with the best ``keep_best`` metric (no optimizer state)
    checkpoints/last.pt  the latest epoch, with optimizer (and GradScaler) state for ``resume``
    train.log            the epoch lines and warnings
    training curves      from liverseg.trainer.curves.plot_training_curves (when available)

Data flow per training batch (all on the training device): uint8 (or resized float)
slices -> augmentation (:mod:`liverseg.trainer.augment`) -> :func:`liverseg.core.preprocess.preprocess`
(normalise, pad to the model's multiple) -> network logits -> :func:`postprocess`
(crop the padding, so it never enters the loss) -> loss against the mask.

Validation runs at each slice's native size, like ``liverseg-eval`` and inference:
metrics per image from ``sigmoid(logits) > threshold`` (the study's way: per image,
then averaged), accumulated in :class:`liverseg.core.metrics.SegmentationMetrics`.

Reproducibility: the seed sets Python, NumPy and torch; the shuffle order and the
augmentation random numbers are re-seeded from (seed, epoch) at each epoch, so a run
resumed from ``last.pt`` sees the same batches as one that never stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from liverseg.core.data import DataError, Sample, discover, read_pair
from liverseg.core.metrics import SegmentationMetrics
from liverseg.core.preprocess import Preprocessing, postprocess, preprocess
from liverseg.models import create_model, required_multiple
from liverseg.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from liverseg.trainer.augment import augment_batch
from liverseg.trainer.config import ConfigError, TrainConfig

log = logging.getLogger("liverseg.trainer")

EPOCH_COLUMNS = (
    "epoch",
    "mPA",
    "mIoU",
    "train_loss",
    "val_loss",
    "dice",
    "iou",
    "precision",
    "recall",
    "lr",
    "seconds",
)
MINIMISED = ("val_loss",)


@dataclass
class TrainResult:
    """What a run wrote: its folder, checkpoints (None when ``save_model`` is false) and history."""

    run_dir: Path
    best: Path | None
    last: Path | None
    history: list[dict[str, Any]]
    stopped_early: bool = False
    best_info: dict[str, Any] | None = None
    data_summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- device and seeds


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. A requested CUDA device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__}); use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # torch gives each worker base_seed + id; derive NumPy's and Python's from it.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# ---------------------------------------------------------------- data


class SliceDataset(Dataset):
    """(image [1, H, W], mask uint8 [1, H, W]) per sample.

    Without ``size`` the image stays uint8 at its native size. With ``size`` both are
    resized so a batch collates: the image bilinearly (float32, 0..255 kept unrounded,
    as the exported pipeline resizes), the mask by nearest neighbour.
    """

    def __init__(self, samples: list[Sample], size: tuple[int, int] | None = None) -> None:
        self.samples = samples
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = read_pair(self.samples[i])
        x = torch.from_numpy(np.array(img, dtype=np.uint8))[None]  # [1, H, W] uint8 (a writable copy)
        m = torch.from_numpy(mask.astype(np.uint8))[None]
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x[None].float(), size=self.size, mode="bilinear", align_corners=False)[0]
            m = F.interpolate(m[None].float(), size=self.size, mode="nearest")[0].to(torch.uint8)
        elif self.size is not None:
            x = x.float()
        return x, m


def _list_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return batch


def group_by_shape(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stack runs of consecutive equal-shaped (image, mask) pairs into batches, order kept."""
    start = 0
    for i in range(1, len(items) + 1):
        if i == len(items) or items[i][0].shape != items[start][0].shape:
            chunk = items[start:i]
            yield torch.stack([c[0] for c in chunk]), torch.stack([c[1] for c in chunk])
            start = i


def load_split(name: str, x_path: str, y_path: str | None, root: Path | None) -> list[Sample]:
    """Samples of one split; any problem is a DataError naming the split and the file."""
    try:
        return discover(x_path, labels=y_path, root=root, need_labels=True)
    except DataError as e:
        raise DataError(f"{name} data: {e}") from None


def check_split(name: str, samples: list[Sample], progress: bool = False) -> dict[str, Any]:
    """Read every pair once (before training); returns counts, sizes and liver fraction."""
    sizes: dict[str, int] = {}
    fractions = []
    for s in tqdm(samples, desc=f"checking {name} data", leave=False, disable=not progress, unit="img"):
        try:
            img, mask = read_pair(s)
        except DataError as e:  # read_pair already names the file and where it was listed
            raise DataError(f"{name} data: {e}") from None
        key = f"{img.shape[0]}x{img.shape[1]}"
        sizes[key] = sizes.get(key, 0) + 1
        fractions.append(float(mask.mean()))
    return {
        "n_images": len(samples),
        "mean_liver_fraction": float(np.mean(fractions)) if fractions else 0.0,
        "n_without_liver": int(sum(f == 0 for f in fractions)),
        "sizes": sizes,
    }


# ---------------------------------------------------------------- losses


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image (smoothed so empty masks give 0 loss when predicted empty), averaged."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def make_loss(name: str):
    """The study's ``bce`` is binary cross-entropy on logits (the sigmoid is outside the network)."""
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "dice":
        return soft_dice_loss
    if name == "bce+dice":
        return lambda logits, t: F.binary_cross_entropy_with_logits(logits, t) + soft_dice_loss(logits, t)
    raise ConfigError(f"unknown loss {name!r}")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of an epoch (1-based): a pure function of the epoch, so resume is exact."""
    if cfg.lr_schedule == "cosine" and cfg.epochs > 1:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# ---------------------------------------------------------------- the run


def _new_run_dir(out: Path, cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = out / f"{cfg.model}-w{cfg.model_width}-{stamp}"
    run_dir, k = base, 2
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}-{k}")
        k += 1
    return run_dir


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write_epochs(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in EPOCH_COLUMNS})


def _improved(value: float, best: dict[str, Any] | None, metric: str, min_delta: float) -> bool:
    if best is None:
        return True
    if metric in MINIMISED:
        return value < best["value"] - min_delta
    return value > best["value"] + min_delta


def _check_resume(ckpt: Checkpoint, cfg: TrainConfig, pp: Preprocessing) -> None:
    where = str(ckpt.path)
    if ckpt.model_name != cfg.model or dict(ckpt.model_args) != cfg.model_args():
        raise ConfigError(
            f"key 'resume': {where} holds model {ckpt.model_name} {ckpt.model_args}, "
            f"but the config asks for {cfg.model} {cfg.model_args()}"
        )
    if ckpt.preprocessing != pp:
        raise ConfigError(
            f"key 'resume': {where} was trained with preprocessing {ckpt.preprocessing.to_dict()}, "
            f"the config gives {pp.to_dict()} (normalize/image_size must match)"
        )
    if ckpt.optimizer is None:
        raise CheckpointError(f"{where}: has no optimizer state (best.pt keeps weights only); resume from last.pt")
    if ckpt.epoch >= cfg.epochs:
        raise ConfigError(
            f"key 'epochs': {cfg.epochs} but {where} already finished epoch {ckpt.epoch}; raise epochs to continue"
        )


def train(cfg: TrainConfig, *, data_root: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Run one training as the config says (module docstring); everything is checked first."""
    # ---- everything that can fail on bad input, before any work
    device = resolve_device(cfg.device)
    if cfg.amp != "off" and device.type != "cuda":
        raise ConfigError(f"key 'amp': {cfg.amp!r} needs CUDA but the device is {device} (set amp to 'off')")
    if cfg.amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("key 'amp': 'bf16' is not supported on this GPU; use 'fp16'")
    root_s = data_root if data_root is not None else cfg.data_root
    root = Path(root_s) if root_s is not None else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"data root {root} is not a folder")
    cfg = replace(cfg, width=cfg.model_width, data_root=str(root) if root is not None else None)

    train_samples = load_split("training", cfg.tdata_x_path, cfg.tdata_y_path, root)
    val_samples = load_split("validation", cfg.vdata_x_path, cfg.vdata_y_path, root)
    summary = {
        "train": check_split("training", train_samples, progress),
        "val": check_split("validation", val_samples, progress),
    }
    summary["train"]["source"] = cfg.tdata_x_path
    summary["val"]["source"] = cfg.vdata_x_path
    if cfg.image_size is None and len(summary["train"]["sizes"]) > 1:
        raise DataError(
            f"training images have different sizes {summary['train']['sizes']} (height x width: count); "
            f"set image_size [height, width] in the config to resize them to one size"
        )

    pp = Preprocessing(normalize=cfg.normalize, size=cfg.image_size, pad_multiple=max(16, required_multiple(cfg.model)))
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        _check_resume(resume, cfg, pp)

    # ---- model, optimiser, data
    if cfg.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    net = create_model(cfg.model, **cfg.model_args()).to(device)
    optimizer = make_optimizer(cfg.optim, net.parameters(), cfg.lr, cfg.weight_decay)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    loss_fn = make_loss(cfg.loss)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 1
    run_dir = None
    if resume is not None:
        net.load_state_dict(resume.state_dict)
        optimizer.load_state_dict(resume.optimizer)
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr
        if resume.scaler and scaler.is_enabled():
            scaler.load_state_dict(resume.scaler)
        history = [dict(h) for h in resume.history]
        best = dict(resume.best) if resume.best else None
        start_epoch = resume.epoch + 1
        ck_dir = resume.path.parent if resume.path else None
        if ck_dir is not None and ck_dir.name == "checkpoints" and (ck_dir.parent / "epochs.csv").exists():
            run_dir = ck_dir.parent  # continue in the run's own folder
    if run_dir is None:
        run_dir = _new_run_dir(Path(cfg.output_dir), cfg)

    pin = device.type == "cuda"
    loader_gen = torch.Generator()
    train_loader = DataLoader(
        SliceDataset(train_samples, cfg.image_size),
        batch_size=cfg.train_batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        generator=loader_gen,
        worker_init_fn=_worker_init,
        persistent_workers=cfg.num_workers > 0,
        drop_last=False,
    )
    val_loader = DataLoader(
        SliceDataset(val_samples, None),
        batch_size=cfg.valid_batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        collate_fn=_list_collate,
        worker_init_fn=_worker_init,
        persistent_workers=cfg.num_workers > 0,
    )
    aug_gen = torch.Generator(device=device) if cfg.augment is not None else None

    # ---- the run folder
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.save_model is not False:
        ckpt_dir.mkdir(exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    epochs_csv = run_dir / "epochs.csv"
    _write_epochs(epochs_csv, history)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)

    def say(line: str) -> None:
        log.info(line)
        if progress:
            tqdm.write(line, file=sys.stderr)

    best_path = ckpt_dir / "best.pt" if cfg.save_model is not False else None
    last_path = ckpt_dir / "last.pt" if cfg.save_model is not False else None

    def checkpoint(epoch: int, with_optimizer: bool) -> Checkpoint:
        return Checkpoint(
            model_name=cfg.model,
            model_args=cfg.model_args(),
            preprocessing=pp,
            state_dict=net.state_dict(),
            threshold=cfg.threshold,
            config=cfg.to_dict(),
            epoch=epoch,
            history=[dict(h) for h in history],
            best=dict(best) if best else None,
            data_summary=summary,
            optimizer=_to_cpu(optimizer.state_dict()) if with_optimizer else None,
            scaler=scaler.state_dict() if (with_optimizer and scaler.is_enabled()) else None,
        )

    stopped_early = False
    try:
        say(
            f"run {run_dir}: {cfg.model} width {cfg.model_width} on {device}"
            f"{f' amp {cfg.amp}' if amp_dtype else ''}; train {len(train_samples)} / val {len(val_samples)} slices; "
            f"epochs {start_epoch}..{cfg.epochs}"
        )
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, epoch)
            loader_gen.manual_seed(cfg.seed * 100003 + epoch)
            if aug_gen is not None:
                aug_gen.manual_seed(cfg.seed * 100019 + epoch)
            train_loss = _train_epoch(
                net,
                train_loader,
                optimizer,
                scaler,
                loss_fn,
                pp,
                cfg,
                device,
                amp_dtype,
                aug_gen,
                f"epoch {epoch}/{cfg.epochs}",
                progress,
            )
            val = validate(net, val_loader, pp, device, loss_fn, cfg.threshold, amp_dtype)
            row = {
                "epoch": epoch,
                "mPA": val["mPA"],
                "mIoU": val["mIoU"],
                "train_loss": train_loss,
                "val_loss": val["val_loss"],
                "dice": val["dice"],
                "iou": val["iou"],
                "precision": val["precision"],
                "recall": val["recall"],
                "lr": float(optimizer.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            value = float(row[cfg.keep_best])
            is_best = _improved(value, best, cfg.keep_best, cfg.min_delta)
            if is_best:
                best = {"metric": cfg.keep_best, "value": value, "epoch": epoch}
            _write_epochs(epochs_csv, history)
            if best_path is not None:
                if is_best:
                    checkpoint(epoch, with_optimizer=False).save(best_path)
                checkpoint(epoch, with_optimizer=True).save(last_path)
            shown = dict.fromkeys([*cfg.val_metrics, cfg.keep_best] if cfg.keep_best != "val_loss" else cfg.val_metrics)
            metrics = " ".join(f"{m} {row[m]:.4f}" for m in shown)
            say(
                f"epoch {epoch}/{cfg.epochs}: train_loss {train_loss:.4f} val_loss {row['val_loss']:.4f} {metrics} "
                f"({row['seconds']:.1f} s){'  * best' if is_best else ''}"
            )
            since_best = epoch - best["epoch"]
            if cfg.early_stopping is not None and since_best >= cfg.early_stopping and epoch < cfg.epochs:
                say(
                    f"early stopping: {cfg.keep_best} has not improved by more than {cfg.min_delta} "
                    f"for {since_best} epoch(s) (best {best['value']:.4f} at epoch {best['epoch']})"
                )
                stopped_early = True
                break
        if best is not None:
            say(
                f"best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}"
                + (f"; checkpoints in {ckpt_dir}" if best_path is not None else "")
            )
        if isinstance(cfg.save_model, str) and best_path is not None and best_path.exists():
            dest = Path(cfg.save_model)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best_path, dest)
            say(f"copied the best checkpoint to {dest}")
        try:
            from liverseg.trainer.curves import plot_training_curves

            plot_training_curves(epochs_csv, run_dir)
        except ImportError as e:
            log.warning("training curves not drawn: matplotlib is not available (%s)", e)
        except Exception as e:  # a figure must never lose a finished run
            log.warning("training curves not drawn: %s: %s", type(e).__name__, e)
    finally:
        log.removeHandler(handler)
        handler.close()
    return TrainResult(
        run_dir=run_dir,
        best=best_path,
        last=last_path,
        history=history,
        stopped_early=stopped_early,
        best_info=best,
        data_summary=summary,
    )


def _train_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn,
    pp: Preprocessing,
    cfg: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    aug_gen: torch.Generator | None,
    desc: str,
    progress: bool,
) -> float:
    net.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True)
    for step, (images, masks) in enumerate(bar):
        x = images.to(device, non_blocking=True)
        t = masks.to(device, non_blocking=True)
        if aug_gen is not None:
            x, t = augment_batch(x, t, cfg.augment, aug_gen)
        t = t.float()
        h, w = x.shape[-2], x.shape[-1]
        z = preprocess(x, pp)  # [N, 1, H', W'] padded
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = net(z)
        logits = postprocess(logits.float(), pp, h, w)  # padding cropped: it never enters the loss
        loss = loss_fn(logits, t)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}, batch {step + 1}: loss is {loss.item()} (lower lr, or set amp to 'off')")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = x.shape[0]
        value = float(loss.detach())
        total += value * n
        count += n
        bar.set_postfix(loss=f"{value:.4f}")
    return total / max(count, 1)


@torch.inference_mode()
def validate(
    net: nn.Module,
    loader: DataLoader,
    pp: Preprocessing,
    device: torch.device,
    loss_fn,
    threshold: float,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Per-image metrics at native size (``sigmoid > threshold``), averaged; plus the mean loss."""
    net.eval()
    metrics = SegmentationMetrics()
    total, count = 0.0, 0
    for batch in loader:
        for images, masks in group_by_shape(batch):
            x = images.to(device, non_blocking=True)
            truth = masks.to(device, non_blocking=True).bool()
            h, w = x.shape[-2], x.shape[-1]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = net(preprocess(x, pp))
            logits = postprocess(logits.float(), pp, h, w)
            total += float(loss_fn(logits, truth.float())) * x.shape[0]
            count += x.shape[0]
            pred = torch.sigmoid(logits) > threshold
            # confusion counts on the device; the same definitions as liverseg.core.metrics.confusion
            dims = (1, 2, 3)
            tp = (pred & truth).sum(dims)
            fp = (pred & ~truth).sum(dims)
            fn = (~pred & truth).sum(dims)
            tn = h * w - tp - fp - fn
            for row in torch.stack([tp, fp, fn, tn], 1).cpu().tolist():
                metrics.add_confusion(*row)
    out = metrics.compute()
    out["val_loss"] = total / max(count, 1)
    return out
