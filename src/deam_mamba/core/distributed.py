"""Multi-process training helpers: torchrun environment, resumable data order, rank-0 guards.

Launch with ``torchrun --nproc-per-node N -m deam_mamba.cli train ...`` (multi-node: add
``--nnodes/--node-rank/--master-addr``). Without torchrun everything runs as one process.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from deam_mamba.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's env vars (``WORLD_SIZE`` > 1), else no-op.

    Backend: NCCL on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (backend %s)", rank, world, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def sync_buffers(info: DistInfo, model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running stats, which each rank updates from its own
    batches) to every rank, so validation gives the same numbers everywhere."""
    if info.enabled:
        for b in model.buffers():
            dist.broadcast(b.data, src=0)


def mean_over_ranks(info: DistInfo, value: float) -> float:
    """Average of a float over all ranks (itself without torchrun)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (seeded shuffle per epoch, one shard per rank) that can start
    part-way through an epoch: ``set_position(epoch, batches_done, batch_size)`` skips the items of
    the batches already trained, so a resumed run sees exactly the same data order.

    With one process it is a plain seeded shuffle (``num_replicas=1``).
    """

    def __init__(self, dataset, info: DistInfo, seed: int, shuffle: bool = True, drop_last: bool = True):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.skip = 0

    def set_position(self, epoch: int, batches_done: int, batch_size: int) -> None:
        self.set_epoch(epoch)
        self.skip = batches_done * batch_size

    def __iter__(self) -> Iterator[int]:
        items = list(super().__iter__())
        return iter(items[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name} but CUDA is not available (use train.device=cpu)")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank if info else 0)
    return dev
