"""Data-parallel training across processes with ``torch.distributed`` (DDP), for the LSTM.

:meth:`DistContext.current` says whether this process is one of several ranks of an
initialised process group (``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...; the
caller runs ``init_process_group``); with one process it is None and the trainer runs as it
always did. Otherwise the context gives the forecaster torch's own pieces:

- :meth:`~DistContext.wrap`: the module in ``DistributedDataParallel`` (gradients averaged over
  the ranks in every backward pass; CPU + gloo, or one CUDA device per rank + nccl);
- :meth:`~DistContext.epoch_order`: this rank's share of the training windows for an epoch,
  from a ``DistributedSampler`` seeded by the seed and reshuffled by the epoch (every rank gets
  the same count, padded by repeats, so every rank runs the same number of steps);
- :meth:`~DistContext.sum`: an all-reduced sum (losses and their counts, so every rank takes
  the same early-stopping decision), :meth:`~DistContext.any` a stop flag that holds when it
  holds on any rank, :meth:`~DistContext.gather` one small vector from every rank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

__all__ = ["DistContext"]


@dataclass(frozen=True)
class DistContext:
    """One rank of an initialised process group of ``world_size`` > 1 processes."""

    rank: int
    world_size: int
    backend: str
    device: torch.device

    @classmethod
    def current(cls) -> DistContext | None:
        """The context of this process, or None when no process group of more than one
        process is initialised (one process: the plain trainer)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        backend = str(dist.get_backend())
        device = torch.device("cpu")
        if backend == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(dist.get_rank(), dist.get_world_size(), backend, device)

    def wrap(self, module: torch.nn.Module) -> DistributedDataParallel:
        """``module`` moved to this rank's device inside DDP (rank 0's initial weights are
        broadcast to the others when it is built)."""
        module.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def epoch_order(self, n: int, seed: int, epoch: int, limit: int = 0) -> np.ndarray:
        """Indices of this rank's training windows in ``epoch`` (of ``n``): its
        ``DistributedSampler`` share, at most ``ceil(limit / world_size)`` of them (0 = all)."""
        sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), np.int64, count=len(sampler))
        return order[:math.ceil(limit / self.world_size)] if limit else order

    def shard(self, n: int) -> np.ndarray:
        """This rank's indices of ``n`` items split without repeats (rank, rank + world, ...),
        for evaluation sums."""
        return np.arange(self.rank, n, self.world_size)

    def sum(self, values) -> np.ndarray:
        """The element-wise sum over all ranks of ``values`` (float64)."""
        t = torch.as_tensor(np.asarray(values, np.float64)).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def gather(self, values) -> list[list[float]]:
        """``values`` (a short float vector, the same length on every rank) of every rank,
        in rank order."""
        t = torch.as_tensor(np.asarray(values, np.float64)).to(self.device)
        out = [torch.zeros_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return [o.cpu().tolist() for o in out]
