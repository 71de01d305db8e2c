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

Divergence: a NaN or infinite training loss (checked at every batch) or validation
loss or ``keep_best`` metric (checked after every epoch) stops the run with a
:class:`ConfigError` naming the epoch (exit 2); that epoch is never written to
``epochs.csv`` nor saved, so ``best.pt`` and ``last.pt`` keep the last finite epoch.

Reproducibility: the seed sets Python, NumPy and torch; the shuffle order and the
augmentation random numbers are re-seeded from (seed, epoch) at each epoch, so a run
resumed from ``last.pt`` sees the same batches as one that never stopped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from liverseg.core.batching import consecutive_batches
from liverseg.core.errors import DeviceError, first_line
from liverseg.core.files import write_text_atomic
from liverseg.core.images import DataError, Sample, discover, read_pair
from liverseg.core.metrics import SegmentationMetrics, confusion_counts
from liverseg.core.preprocess import Preprocessing, has_contrast, postprocess, preprocess, to_gray_range
from liverseg.models import create_model, required_multiple
from liverseg.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from liverseg.trainer.augment import augment_batch
from liverseg.trainer.config import ConfigError, TrainConfig
from liverseg.trainer.distributed import (
    World,
    all_true,
    env_world,
    from_main,
    gather,
    per_process_batch,
    process_device,
    same_buffers,
    shard,
    start,
    stop,
    sum_all,
    wait_all,
)

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
    """``auto`` -> CUDA when present, else CPU. A requested device that is absent or unknown is a DeviceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"device {name!r} is not a device ({first_line(e)}); use 'auto', 'cpu' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__}); use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
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


def _stack(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _image_shape(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[int, ...]:
    return tuple(pair[0].shape)


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


# ---------------------------------------------------------------- the run folder


def new_run_dir(out: Path, cfg: TrainConfig) -> Path:
    """``<out>/<model>-w<width>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``, ... when taken)."""
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
    """The epoch table, rewritten whole and atomically: a killed run never leaves a half-written row."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in EPOCH_COLUMNS})
    write_text_atomic(path, buf.getvalue())


class RunFolder:
    """A run's folder: ``config.json``, ``epochs.csv``, ``train.log`` and ``checkpoints/``.

    ``with RunFolder(...)`` creates it, writes the config and the epoch table so far,
    and routes the trainer's log to ``train.log`` until the block ends.
    """

    def __init__(self, path: Path, cfg: TrainConfig, progress: bool, writes: bool = True) -> None:
        self.path = path
        self.cfg = cfg
        self.writes = writes  # False in every training process but rank 0
        self.progress = progress and writes
        self.checkpoints = path / "checkpoints"
        self.epochs_csv = path / "epochs.csv"
        self._handler: logging.Handler | None = None

    def open(self, history: list[dict[str, Any]]) -> RunFolder:
        if not self.writes:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        if self.cfg.save_model is not False:
            self.checkpoints.mkdir(exist_ok=True)
        write_text_atomic(self.path / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        self.write_epochs(history)
        handler = logging.FileHandler(self.path / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        self._handler = handler
        return self

    def close(self) -> None:
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def say(self, line: str) -> None:
        """One line to ``train.log`` and, with progress on, to the console."""
        if not self.writes:
            return
        log.info(line)
        if self.progress:
            tqdm.write(line, file=sys.stderr)

    def write_epochs(self, history: list[dict[str, Any]]) -> None:
        if self.writes:
            _write_epochs(self.epochs_csv, history)


# ---------------------------------------------------------------- what is trained, and its state


@dataclass
class Prepared:
    """Everything checked before any work: the resolved config, device, data and resume checkpoint."""

    cfg: TrainConfig
    device: torch.device
    pp: Preprocessing
    train_samples: list[Sample]
    val_samples: list[Sample]
    summary: dict[str, Any]
    resume: Checkpoint | None
    world: World = field(default_factory=World)  # the training processes (liverseg.trainer.distributed)
    init: Checkpoint | None = None  # init_from: the weights a fine-tuning starts from


@dataclass
class Trainee:
    """The network and what updates it."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    amp_dtype: torch.dtype | None
    ddp: nn.Module | None = None  # net wrapped in DistributedDataParallel when several processes train


@dataclass
class Progress:
    """Where the run stands: the metric history, the best epoch so far and the next epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start_epoch: int = 1
    run_dir: Path | None = None  # the folder of a resumed run, which continues there


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    shuffle: torch.Generator  # re-seeded per epoch
    augment: torch.Generator | None  # re-seeded per epoch; None without augmentation
    sampler: DistributedSampler | None = None  # several processes: reshuffled per epoch by set_epoch


def _improved(value: float, best: dict[str, Any] | None, metric: str, min_delta: float) -> bool:
    if best is None:
        return True
    if metric in MINIMISED:
        return value < best["value"] - min_delta
    return value > best["value"] + min_delta


def _check_same_model(ckpt: Checkpoint, cfg: TrainConfig, pp: Preprocessing, key: str) -> None:
    where = str(ckpt.path)
    if ckpt.model_name != cfg.model or dict(ckpt.model_args) != cfg.model_args():
        raise ConfigError(
            f"key '{key}': {where} holds model {ckpt.model_name} {ckpt.model_args}, "
            f"but the config asks for {cfg.model} {cfg.model_args()}"
        )
    if ckpt.preprocessing != pp:
        raise ConfigError(
            f"key '{key}': {where} was trained with preprocessing {ckpt.preprocessing.to_dict()}, "
            f"the config gives {pp.to_dict()} (normalize/image_size must match)"
        )


def _check_resume(ckpt: Checkpoint, cfg: TrainConfig, pp: Preprocessing) -> None:
    where = str(ckpt.path)
    _check_same_model(ckpt, cfg, pp, "resume")
    if ckpt.optimizer is None:
        raise CheckpointError(f"{where}: has no optimizer state (best.pt keeps weights only); resume from last.pt")
    if ckpt.epoch >= cfg.epochs:
        raise ConfigError(
            f"key 'epochs': {cfg.epochs} but {where} already finished epoch {ckpt.epoch}; raise epochs to continue"
        )


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_paths(cfg: TrainConfig) -> None:
    """``output_dir`` must be (or be creatable as) a folder and a ``save_model`` path a file, before any work."""
    out = Path(cfg.output_dir)
    found = _first_existing(out)
    if not found.is_dir():
        what = "is a file" if found == out.absolute() else f"lies under {found}, which is a file"
        raise ConfigError(f"key 'output_dir': {out} {what}; runs are written into a folder")
    if isinstance(cfg.save_model, str):
        dest = Path(cfg.save_model)
        if dest.is_dir():
            raise ConfigError(
                f"key 'save_model': {dest} is a folder; give a file path for the copy of best.pt "
                f"(e.g. {dest / 'best.pt'})"
            )
        found = _first_existing(dest.parent)
        if not found.is_dir():
            raise ConfigError(f"key 'save_model': {dest} lies under {found}, which is a file")


def preflight(cfg: TrainConfig, data_root: str | Path | None, progress: bool) -> Prepared:
    """Everything that can fail on bad input (device, data, resume checkpoint), before any work."""
    world = env_world()
    device = process_device(world, resolve_device(cfg.device), cfg.device)
    per_process_batch(world, cfg.train_batch_size)
    if cfg.sync_batchnorm and world.active and device.type != "cuda":
        raise ConfigError(
            "key 'sync_batchnorm': SyncBatchNorm needs CUDA (DDP refuses it on CPU modules); set it false"
        )
    check_output_paths(cfg)
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
    init = None
    if cfg.init_from and resume is None:  # a resumed fine-tuning continues from its own weights
        init = load_checkpoint(cfg.init_from)
        _check_same_model(init, cfg, pp, "init_from")
    return Prepared(cfg, device, pp, train_samples, val_samples, summary, resume, world, init)


def build_trainee(cfg: TrainConfig, device: torch.device, world: World | None = None) -> Trainee:
    """Seeded network, optimizer, GradScaler and loss (cuDNN flags set first); SyncBatchNorm when asked."""
    if cfg.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    net = create_model(cfg.model, **cfg.model_args())
    if cfg.sync_batchnorm and world is not None and world.active:  # same state_dict keys: checkpoints load anywhere
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if device.type == "cpu":
        # channels-last: 1.7x faster CPU training steps on Zen 4 (docs/performance.md); the weights load anywhere
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return Trainee(
        net=net,
        optimizer=make_optimizer(cfg.optim, net.parameters(), cfg.lr, cfg.weight_decay),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"),
        loss_fn=make_loss(cfg.loss),
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp),
    )


def restore(resume: Checkpoint | None, trainee: Trainee, cfg: TrainConfig, init: Checkpoint | None = None) -> Progress:
    """Load a resume checkpoint's weights, optimizer and scaler state; the progress it had reached.

    Without one, ``init`` (``init_from``) gives the starting weights of a fine-tuning: epoch 1, a new optimizer.
    """
    if resume is None:
        if init is not None:
            trainee.net.load_state_dict(init.state_dict)
        return Progress()
    trainee.net.load_state_dict(resume.state_dict)
    if resume.optimizer is not None:  # always there: _check_resume refused a checkpoint without it
        trainee.optimizer.load_state_dict(resume.optimizer)
    for g in trainee.optimizer.param_groups:
        g["lr"] = cfg.lr
    if resume.scaler and trainee.scaler.is_enabled():
        trainee.scaler.load_state_dict(resume.scaler)
    ck_dir = resume.path.parent if resume.path else None
    run_dir = None
    if ck_dir is not None and ck_dir.name == "checkpoints" and (ck_dir.parent / "epochs.csv").exists():
        run_dir = ck_dir.parent  # continue in the run's own folder
    return Progress(
        history=[dict(h) for h in resume.history],
        best=dict(resume.best) if resume.best else None,
        start_epoch=resume.epoch + 1,
        run_dir=run_dir,
    )


def make_loaders(prep: Prepared) -> Loaders:
    """Shuffled training batches at ``image_size``; validation lists of native-size pairs.

    With several processes each takes its share of every global batch (a
    DistributedSampler) and a contiguous block of the validation slices.
    """
    cfg, world = prep.cfg, prep.world
    pin = prep.device.type == "cuda"
    shuffle = torch.Generator()
    train_set = SliceDataset(prep.train_samples, cfg.image_size)
    sampler: DistributedSampler | None = None
    if world.active:
        sampler = DistributedSampler(train_set, world.size, world.rank, shuffle=True, seed=cfg.seed, drop_last=False)
    val_set: Dataset = SliceDataset(prep.val_samples, None)
    if world.active:
        val_set = Subset(val_set, list(shard(len(prep.val_samples), world)))
    train_loader = DataLoader(
        train_set,
        batch_size=per_process_batch(world, cfg.train_batch_size),
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        generator=shuffle,
        worker_init_fn=_worker_init,
        persistent_workers=cfg.num_workers > 0,
        drop_last=False,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=cfg.valid_batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        collate_fn=_list_collate,
        worker_init_fn=_worker_init,
        persistent_workers=cfg.num_workers > 0,
    )
    augment = torch.Generator(device=prep.device) if cfg.augment is not None else None
    return Loaders(train_loader, val_loader, shuffle, augment, sampler)


# ---------------------------------------------------------------- checkpoints


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


class Checkpointer:
    """Writes ``best.pt`` (weights only) and ``last.pt`` (with optimizer state); none when ``save_model`` is false."""

    def __init__(self, run: RunFolder, prep: Prepared, trainee: Trainee) -> None:
        self.prep = prep
        self.trainee = trainee
        self.writes = run.writes
        saving = prep.cfg.save_model is not False
        self.best_path = run.checkpoints / "best.pt" if saving else None
        self.last_path = run.checkpoints / "last.pt" if saving else None

    def build(self, epoch: int, progress: Progress, with_optimizer: bool) -> Checkpoint:
        cfg, t = self.prep.cfg, self.trainee
        return Checkpoint(
            model_name=cfg.model,
            model_args=cfg.model_args(),
            preprocessing=self.prep.pp,
            state_dict=t.net.state_dict(),
            threshold=cfg.threshold,
            config=cfg.to_dict(),
            epoch=epoch,
            history=[dict(h) for h in progress.history],
            best=dict(progress.best) if progress.best else None,
            data_summary=self.prep.summary,
            optimizer=_to_cpu(t.optimizer.state_dict()) if with_optimizer else None,
            scaler=t.scaler.state_dict() if (with_optimizer and t.scaler.is_enabled()) else None,
        )

    def save(self, epoch: int, progress: Progress, is_best: bool) -> None:
        if self.best_path is None or self.last_path is None or not self.writes:
            return
        if is_best:
            self.build(epoch, progress, with_optimizer=False).save(self.best_path)
        self.build(epoch, progress, with_optimizer=True).save(self.last_path)


# ---------------------------------------------------------------- the epoch loop


def run_epoch(epoch: int, prep: Prepared, trainee: Trainee, loaders: Loaders, progress: bool) -> dict[str, Any]:
    """Train one epoch (lr and random streams set from the epoch), validate; the epochs.csv row."""
    cfg = prep.cfg
    t0 = time.perf_counter()
    for g in trainee.optimizer.param_groups:
        g["lr"] = lr_at(cfg, epoch)
    loaders.shuffle.manual_seed(cfg.seed * 100003 + epoch)
    if loaders.sampler is not None:
        loaders.sampler.set_epoch(epoch)  # DistributedSampler: order from (seed, epoch)
    if loaders.augment is not None:  # each process its own stream; rank 0's is one process's
        loaders.augment.manual_seed(cfg.seed * 100019 + epoch + 1000003 * prep.world.rank)
    desc = f"epoch {epoch}/{cfg.epochs}"
    train_loss = _train_epoch(trainee, loaders.train, prep, loaders.augment, desc, progress)
    same_buffers(trainee.net, prep.world)  # every process validates the weights rank 0 saves
    val = validate(
        trainee.net,
        loaders.val,
        prep.pp,
        prep.device,
        trainee.loss_fn,
        cfg.threshold,
        trainee.amp_dtype,
        world=prep.world,
    )
    return {
        "epoch": epoch,
        "mPA": val["mPA"],
        "mIoU": val["mIoU"],
        "train_loss": train_loss,
        "val_loss": val["val_loss"],
        "dice": val["dice"],
        "iou": val["iou"],
        "precision": val["precision"],
        "recall": val["recall"],
        "lr": float(trainee.optimizer.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - t0,
    }


def _epoch_line(cfg: TrainConfig, row: dict[str, Any], is_best: bool) -> str:
    shown = dict.fromkeys([*cfg.val_metrics, cfg.keep_best] if cfg.keep_best != "val_loss" else cfg.val_metrics)
    metrics = " ".join(f"{m} {row[m]:.4f}" for m in shown)
    return (
        f"epoch {row['epoch']}/{cfg.epochs}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
        f"{metrics} ({row['seconds']:.1f} s){'  * best' if is_best else ''}"
    )


def epoch_loop(
    prep: Prepared, trainee: Trainee, loaders: Loaders, state: Progress, run: RunFolder, saver: Checkpointer
) -> bool:
    """Epochs ``state.start_epoch..cfg.epochs``: table, checkpoints and log line after each; True if stopped early."""
    cfg = prep.cfg
    for epoch in range(state.start_epoch, cfg.epochs + 1):
        row = run_epoch(epoch, prep, trainee, loaders, run.progress)
        _check_finite(row, cfg, run, state)  # a diverged epoch is never written, let alone kept as best
        state.history.append(row)
        value = float(row[cfg.keep_best])
        is_best = _improved(value, state.best, cfg.keep_best, cfg.min_delta)
        best: dict[str, Any] | None = (
            {"metric": cfg.keep_best, "value": value, "epoch": epoch} if is_best else state.best
        )
        assert best is not None  # the first epoch always improves on None
        state.best = best
        run.write_epochs(state.history)
        saver.save(epoch, state, is_best)
        run.say(_epoch_line(cfg, row, is_best))
        since_best = epoch - best["epoch"]
        if cfg.early_stopping is not None and since_best >= cfg.early_stopping and epoch < cfg.epochs:
            run.say(
                f"early stopping: {cfg.keep_best} has not improved by more than {cfg.min_delta} "
                f"for {since_best} epoch(s) (best {best['value']:.4f} at epoch {best['epoch']})"
            )
            return True
    return False


def _check_finite(row: dict[str, Any], cfg: TrainConfig, run: RunFolder, state: Progress) -> None:
    """Stop the run (ConfigError, exit 2) when an epoch's losses or its keep_best metric are NaN or infinite."""
    watched = dict.fromkeys(["train_loss", "val_loss", cfg.keep_best])
    bad = [f"{k} {row[k]}" for k in watched if not math.isfinite(float(row[k]))]
    if not bad:
        return
    kept = (
        f"; checkpoints of epoch {state.best['epoch']} (best) and earlier are kept in {run.checkpoints}"
        if state.best is not None and cfg.save_model is not False
        else "; nothing was saved"
    )
    raise ConfigError(
        f"epoch {row['epoch']}/{cfg.epochs}: {', '.join(bad)}: training diverged and was stopped, this epoch is "
        f"not saved{kept}; lower key 'lr' (now {cfg.lr:g}) or set key 'amp' to 'off'"
    )


def _finish(cfg: TrainConfig, state: Progress, run: RunFolder, saver: Checkpointer) -> None:
    """The closing line, the copy of best.pt to a ``save_model`` path, and the training curves."""
    best = state.best
    if best is not None:
        run.say(
            f"best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}"
            + (f"; checkpoints in {run.checkpoints}" if saver.best_path is not None else "")
        )
    if isinstance(cfg.save_model, str) and saver.best_path is not None and saver.best_path.exists():
        dest = Path(cfg.save_model)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saver.best_path, dest)
        run.say(f"copied the best checkpoint to {dest}")
    try:
        from liverseg.trainer.curves import plot_training_curves

        plot_training_curves(run.epochs_csv, run.path)
    except ImportError as e:
        log.warning("training curves not drawn: matplotlib is not available (%s)", e)
    except Exception as e:  # a figure must never lose a finished run
        log.warning("training curves not drawn: %s: %s", type(e).__name__, e)


def train(cfg: TrainConfig, *, data_root: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Run one training as the config says (module docstring); everything is checked first."""
    prep = preflight(cfg, data_root, progress)
    cfg, world = prep.cfg, prep.world
    backend = start(world, prep.device)
    try:
        trainee = build_trainee(cfg, prep.device, world)
        state = restore(prep.resume, trainee, cfg, prep.init)
        if world.active:  # after the resume's weights: DDP broadcasts rank 0's at construction
            ids = [prep.device.index] if prep.device.type == "cuda" else None
            trainee.ddp = nn.parallel.DistributedDataParallel(trainee.net, device_ids=ids)
        loaders = make_loaders(prep)
        path = from_main(state.run_dir or (new_run_dir(Path(cfg.output_dir), cfg) if world.is_main else None), world)
        run = RunFolder(path, cfg, progress, writes=world.is_main)
        with run.open(state.history):
            saver = Checkpointer(run, prep, trainee)
            procs = (
                f"; {world.size} processes (DistributedDataParallel, {backend}), global batch "
                f"{cfg.train_batch_size} = {per_process_batch(world, cfg.train_batch_size)} per process"
                f"{', SyncBatchNorm' if cfg.sync_batchnorm else ''}"
                if world.active
                else "; 1 process"
            )
            run.say(
                f"run {run.path}: {cfg.model} width {cfg.model_width} on {prep.device}"
                f"{f' amp {cfg.amp}' if trainee.amp_dtype else ''}{procs}; train {len(prep.train_samples)} / "
                f"val {len(prep.val_samples)} slices; epochs {state.start_epoch}..{cfg.epochs}"
            )
            stopped_early = epoch_loop(prep, trainee, loaders, state, run, saver)
            if world.is_main:
                _finish(cfg, state, run, saver)
        wait_all(world)
    finally:
        stop(world)
    return TrainResult(
        run_dir=run.path,
        best=saver.best_path,
        last=saver.last_path,
        history=state.history,
        stopped_early=stopped_early,
        best_info=state.best,
        data_summary=prep.summary,
    )


def _train_epoch(
    trainee: Trainee,
    loader: DataLoader,
    prep: Prepared,
    aug_gen: torch.Generator | None,
    desc: str,
    progress: bool,
) -> float:
    """One pass over the training batches; the mean loss per image."""
    net, optimizer, scaler, amp_dtype = trainee.net, trainee.optimizer, trainee.scaler, trainee.amp_dtype
    model = trainee.ddp or net  # the DDP wrapper averages the gradients over the processes
    augment, pp, device, world = prep.cfg.augment, prep.pp, prep.device, prep.world
    net.train()
    total, count = 0.0, 0
    # closed on an error too, so an error line does not continue the bar's line
    with tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True) as bar:
        for step, (images, masks) in enumerate(bar):
            x = images.to(device, non_blocking=True)
            t = masks.to(device, non_blocking=True)
            if aug_gen is not None and augment is not None:
                x, t = augment_batch(x, t, augment, aug_gen)
            t = t.float()
            h, w = x.shape[-2], x.shape[-1]
            z = preprocess(x, pp)  # [N, 1, H', W'] padded
            if device.type == "cpu":
                z = z.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(z)
            logits = postprocess(logits.float(), pp, h, w)  # padding cropped: it never enters the loss
            loss = trainee.loss_fn(logits, t)
            finite = bool(torch.isfinite(loss))
            if not (all_true(finite, world) if world.active else finite):  # every process stops together
                # a diverging run is a config problem (learning rate, mixed precision): one line, not a traceback
                said = f"{loss.item()}" if not finite else "not finite in another process"
                raise ConfigError(
                    f"{desc}, batch {step + 1}: loss is {said}; lower key 'lr', or set key 'amp' to 'off'"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = x.shape[0]
            value = float(loss.detach())
            total += value * n
            count += n
            bar.set_postfix(loss=f"{value:.4f}")
    total, count_all = sum_all([total, float(count)], world)  # the mean over every process's images
    return total / max(count_all, 1)


@torch.inference_mode()
def validate(
    net: nn.Module,
    loader: DataLoader,
    pp: Preprocessing,
    device: torch.device,
    loss_fn,
    threshold: float,
    amp_dtype: torch.dtype | None = None,
    world: World | None = None,
) -> dict[str, float]:
    """Per-image metrics at native size (``sigmoid > threshold``), averaged; plus the mean loss.

    The masks are the exported model's: with per-image z-score, a slice without contrast
    predicts no liver (:func:`~liverseg.core.preprocess.has_contrast`), so the validation
    numbers that pick the best epoch are the ones ``liverseg-eval`` gives its export.

    With several processes (``world``) each validates its block of the slices; the
    per-image counts are gathered in slice order and the metrics computed from them as
    one process does, so they are one process's numbers (``val_loss`` may differ in its
    last digits: the batches differ).
    """
    net.eval()
    world = world or World()
    metrics = SegmentationMetrics()
    rows: list[list[int]] = []
    total, count = 0.0, 0
    for batch in loader:
        for chunk in consecutive_batches(batch, _image_shape, len(batch)):  # native sizes: one shape per stack
            images, masks = _stack(chunk)
            x = images.to(device, non_blocking=True)
            truth = masks.to(device, non_blocking=True).bool()
            h, w = x.shape[-2], x.shape[-1]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = net(preprocess(x, pp))
            logits = postprocess(logits.float(), pp, h, w)
            total += float(loss_fn(logits, truth.float())) * x.shape[0]
            count += x.shape[0]
            pred = torch.sigmoid(logits) > threshold
            if pp.normalize == "zscore":  # the exported pipeline's rule: a slice without contrast shows no liver
                pred &= has_contrast(to_gray_range(x)).bool()
            rows += confusion_counts(pred, truth).cpu().tolist()  # counted on the device
    for row in gather(rows, world):
        metrics.add_confusion(*row)
    total, count_all = sum_all([total, float(count)], world)
    out = metrics.compute()
    out["val_loss"] = total / max(count_all, 1)
    return out
