"""Data-parallel training across processes: what :mod:`liverseg.trainer.train` needs of ``torch.distributed``.

A run under ``torchrun`` (``torchrun --nproc-per-node N -m liverseg.trainer CONFIG``,
or ``liverseg-train --nproc-per-node N CONFIG``) has one process per GPU, or N CPU
processes; torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the
rendezvous), :func:`env_world` reads them. The backend is NCCL on CUDA (each process
takes ``cuda:LOCAL_RANK``) and gloo on the CPU.

The rules the trainer keeps:

* ``train_batch_size`` is the **global** batch (the study's meaning): each of the N
  processes takes ``train_batch_size / N`` slices per step, and DistributedDataParallel
  averages the gradients, so a step sees the same number of slices as one process did.
* The training sampler is ``DistributedSampler`` seeded with the config's ``seed`` and
  reshuffled per epoch (``set_epoch``); when N does not divide the training set it
  repeats a few slices so every process has as many (torch's rule).
* Validation is split into N contiguous blocks (:func:`shard`), no slice repeated; the
  per-image confusion counts are gathered in slice order (:func:`gather`) and the
  metrics computed from them exactly as one process computes them, so the numbers are
  the same as one process's evaluation of the same weights.
* Only rank 0 writes (run folder, ``epochs.csv``, log, checkpoints, curves).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from liverseg.trainer.config import ConfigError

ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: size 1, rank 0)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process: gradients, samples and metrics are shared."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes."""
        return self.rank == 0


def env_world() -> World:
    """The world torchrun describes in the environment; one process without it."""
    try:
        size, rank, local = (int(os.environ.get(k, d)) for k, d in zip(ENV, ("1", "0", "0")))
    except ValueError:
        raise ConfigError(f"{'/'.join(ENV)} must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(size, rank, local)


def process_device(world: World, device: torch.device, requested: str) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` on CUDA (one GPU per process), else ``device``."""
    if not world.active or device.type != "cuda":
        return device
    if ":" in requested:
        raise ConfigError(
            f"key 'device': {requested!r} under torchrun; each process takes cuda:LOCAL_RANK, set 'cuda' or 'auto'"
        )
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"process {world.rank} has LOCAL_RANK {world.local_rank} but this node has "
            f"{torch.cuda.device_count()} GPU(s); use --nproc-per-node <= the GPU count"
        )
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def per_process_batch(world: World, global_batch: int) -> int:
    """``train_batch_size`` split over the processes; a global batch that does not split is a ConfigError."""
    if global_batch % world.size:
        raise ConfigError(
            f"key 'train_batch_size': {global_batch} is the global batch and does not split over "
            f"{world.size} processes; use a multiple of {world.size}"
        )
    return global_batch // world.size


def start(world: World, device: torch.device) -> str | None:
    """Join the process group (NCCL on CUDA, gloo on the CPU); the backend, or None for one process."""
    if not world.active:
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, world_size=world.size, rank=world.rank)
    return backend


def stop(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def wait_all(world: World) -> None:
    """Every process reaches this point before any goes on (after a run ends normally, before :func:`stop`),
    so no process tears its process group down while another still works.

    Once, in a full test run, a worker finished while rank 0 was still writing the run's
    curves and aborted as it exited ("terminate called without an active exception",
    SIGABRT), failing the launch; not reproduced since (six runs alone, and a 4 s delay
    added to rank 0's closing work), so this is the usual orderly teardown, not a proven cure.
    """
    if world.active and dist.is_initialized():
        dist.barrier()


def shard(n: int, world: World) -> range:
    """This process's contiguous block of ``n`` items (sizes differ by one at most)."""
    return range(world.rank * n // world.size, (world.rank + 1) * n // world.size)


def gather(items: list[Any], world: World) -> list[Any]:
    """Every process's ``items``, concatenated in rank order (with :func:`shard`: the original order)."""
    if not world.active:
        return items
    parts: list[list[Any] | None] = [None] * world.size
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in (p or [])]


def sum_all(values: list[float], world: World) -> list[float]:
    """The sums of ``values`` over the processes (float64)."""
    if not world.active:
        return values
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=on)  # NCCL reduces CUDA tensors only
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def all_true(flag: bool, world: World) -> bool:
    """True when ``flag`` holds in every process (every process must call it)."""
    return sum_all([0.0 if flag else 1.0], world)[0] == 0.0


def same_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in every process.

    DDP broadcasts them before each training forward, after which every process
    updates them from its own batch; validation must run the weights rank 0 saves.
    """
    if world.active:
        for b in module.buffers():
            dist.broadcast(b, src=0)


def from_main(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` in every process."""
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
