"""Multi-GPU / multi-node training with torchrun and DistributedDataParallel (DDP).

Launch any protoprune command with `torchrun`; it sets RANK, WORLD_SIZE, LOCAL_RANK (and the
rendezvous variables) and `init_distributed` joins the process group: nccl on CUDA, gloo on CPU.
Without torchrun nothing here starts a process group and every helper is a no-op, so the same code
runs unchanged in one process.

Conventions:
- `data.batch_size` is the batch of ONE process; the global batch is batch_size x world size.
- Every rank holds the full model and computes the same metrics (predictions are all-gathered in
  loader order before the metrics), so all ranks take the same decisions (best epoch, ...);
  only rank 0 (`is_main`) writes files and logs, the others wait at a `barrier`.
- Checkpoints hold the unwrapped model; a run can resume with another world size. Resume is
  bit-exact only at the same world size: the random states of every rank are saved, and with
  another world size they are re-derived from the seed, the rank and the epoch.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from .devices import check_device

log = logging.getLogger(__name__)


# --- the process group ------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """True inside an initialised process group (also one of world size 1)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0 writes files and logs; true in a plain single process."""
    return rank() == 0


def init_distributed(device: str = "auto", timeout_minutes: float = 30) -> torch.device:
    """Join torchrun's process group (once) and return this rank's device.

    nccl when this rank uses CUDA (device cuda:LOCAL_RANK), gloo otherwise. Outside torchrun the
    configured device is returned and no group is started.
    """
    check_device(device)
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not launched_by_torchrun() and not is_distributed():
        return torch.device(("cuda" if want_cuda else "cpu") if device == "auto" else device)
    if want_cuda:
        torch.cuda.set_device(local_rank())
        dev = torch.device("cuda", local_rank())
    else:
        dev = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
        if not is_main():  # rank-0-only logging: the others keep warnings and errors
            logging.getLogger("protoprune").setLevel(logging.WARNING)
        log.info("distributed: %d processes, backend %s", world_size(), dist.get_backend())
    return dev


def resolve_device(name: str = "auto") -> torch.device:
    """The configured device, or this rank's GPU under torchrun."""
    check_device(name, "--device / train.device")
    if is_distributed() or launched_by_torchrun():
        return init_distributed(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


# --- collectives ----------------------------------------------------------------------------------


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_reduce_sum(*values: float | torch.Tensor) -> list[float]:
    """Sums of scalars over all ranks (one collective for all of them)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if is_distributed():
        t = t.to(_comm_device())
        dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_tensor(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's tensor (first dimensions may differ between ranks), on every rank."""
    if not is_distributed():
        return [t]
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_ = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(sizes_), *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t.to(dev)
    out = [torch.empty_like(padded) for _ in sizes_]
    dist.all_gather(out, padded)
    return [o[:s].to(t.device) for o, s in zip(out, sizes_, strict=True)]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (guards against any drift)."""
    if not is_distributed():
        return
    for t in [*module.parameters(), *module.buffers()]:
        buf = t.data.to(_comm_device())
        dist.broadcast(buf, src)
        t.data.copy_(buf)


def broadcast_tensor(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s tensor (same shape on every rank): one decision for all ranks, e.g. which
    filters to prune, even where float rounding differs between GPUs."""
    if not is_distributed():
        return t
    buf = t.detach().to(_comm_device()).contiguous()
    dist.broadcast(buf, src)
    return buf.to(t.device)


def prepare_output_dir(path: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Every rank checks the output folder; rank 0 alone creates it (or moves an old one aside);
    the others wait for it. The same as `io.prepare_run_dir` in a single process."""
    from .io import check_run_dir, prepare_run_dir

    path = check_run_dir(path, force=force, resume=resume)
    barrier()  # every rank has checked before rank 0 changes anything
    if is_main():
        prepare_run_dir(path, force=force, resume=resume)
    barrier()
    return path


# --- sharded data -------------------------------------------------------------------------------


def shard_indices(sampler: Sampler) -> list[int] | None:
    """Global dataset indices this rank's loader visits (in order), or None outside DDP."""
    if isinstance(sampler, DistributedSampler):
        return list(iter(sampler))
    return None


def ordered_shard(loader: Any, what: str = "the loader") -> list[int] | None:
    """This rank's global indices of an in-order loader (None in one process); refuses a loader
    that shuffles or samples, whose positions would not be image indices."""
    from torch.utils.data import SequentialSampler

    from .errors import DataError

    shard = shard_indices(loader.sampler)
    if not isinstance(loader.sampler, SequentialSampler) and (shard is None or loader.sampler.shuffle):
        raise DataError(
            f"{what} shuffles or samples its images, so image indices would be wrong",
            "use a loader with shuffle=False and no sampler (Loaders.push, val or test)",
        )
    return shard


def gather_in_order(t: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """Rows computed on this rank's shard of an unshuffled DistributedSampler, gathered from all
    ranks back into dataset order, without DistributedSampler's padding duplicates.

    DistributedSampler(shuffle=False) gives rank r the positions r, r + W, r + 2W, ... of the
    index list padded to a multiple of W, so interleaving the ranks' rows restores the order.
    """
    if not isinstance(sampler, DistributedSampler):
        return t
    if sampler.shuffle:
        raise ValueError("gather_in_order needs an unshuffled DistributedSampler")
    parts = all_gather_tensor(t)
    stacked = torch.stack(parts, 1)  # (per rank, W, ...): row i of rank r = position i*W + r
    return stacked.flatten(0, 1)[: len(sampler.dataset)]


class DistributedWeightedSampler(Sampler[int]):
    """Class-balanced oversampling across ranks.

    Every rank draws the SAME global multinomial sample (generator seeded with seed + epoch) of
    `num_samples` indices, rounded up to a multiple of the world size, and takes its strided
    share; together the ranks see exactly the global sample one process would draw, so the
    class balance of each global batch is that of single-process training.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        num_samples: int,
        num_replicas: int | None = None,
        rank_: int | None = None,
        seed: int = 0,
    ) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_ is None else rank_
        self.total = math.ceil(num_samples / self.num_replicas) * self.num_replicas
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        return iter(draw[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total // self.num_replicas


def set_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a distributed sampler for `epoch` (a no-op for ordinary samplers)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# --- the model ----------------------------------------------------------------------------------


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """DDP around `model` inside a process group; `model` itself otherwise.

    Build it after choosing which parameters train: DDP reduces the gradients of the parameters
    that require grad when it is built. With `sync_batchnorm`, BatchNorm layers are converted in
    place (the same parameter objects) so batch statistics span the global batch (CUDA only).
    """
    if not is_distributed():
        return model
    if sync_batchnorm:
        convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm child for SyncBatchNorm in place, sharing parameters and buffers."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, nn.SyncBatchNorm
        ):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batchnorm(child)
    return model


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """SyncBatchNorm back to BatchNorm2d in place (pruning and export expect plain BatchNorm).

    torch has no inverse of convert_sync_batchnorm; this mirrors it, sharing parameters/buffers.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            revert_sync_batchnorm(child)
    return model


# --- random states --------------------------------------------------------------------------------


def rank_seed(seed: int, epoch: int) -> int:
    """A seed for this rank at `epoch`: used for augmentation randomness, distinct per rank."""
    return int(np.random.SeedSequence([seed, rank(), epoch]).generate_state(1)[0])


def seed_ranks(
    seed: int, epoch: int = 0, generator: torch.Generator | None = None, all_ranks: bool = False
) -> None:
    """Give each rank its own random stream (augmentations differ between ranks).

    Rank 0 keeps the plain seed's stream unless `all_ranks`, so rank 0 of a world of one behaves
    exactly like a single process.
    """
    if not is_distributed() or (rank() == 0 and not all_ranks):
        return
    import random

    s = rank_seed(seed, epoch)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    if generator is not None:
        generator.manual_seed(s)
