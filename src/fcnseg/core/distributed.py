"""Training and evaluation across processes with ``torch.distributed``, as launched by ``torchrun``.

``torchrun`` starts one process per device and tells each its place through the environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`distributed_session` reads it, joins the
process group (NCCL on GPUs, Gloo on the CPU, with a timeout so that a lost peer ends the run instead of hanging it)
and describes the process in a :class:`World`. Without ``torchrun`` the world is one process and nothing here
communicates. The rest is the few collective steps that training and evaluation need: a batch shared between the
processes (:func:`share`), a loss normalised over the whole global batch (:func:`global_loss`), a model wrapped in
DistributedDataParallel (:func:`wrap_model`), a split sharded for evaluation (:func:`shard`), sums over all processes
(:func:`all_reduce_sum`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from fcnseg.core.device import resolve_device

__all__ = [
    "World",
    "all_reduce_sum",
    "distributed_session",
    "global_loss",
    "shard",
    "share",
    "wrap_model",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run.

    Attributes:
        rank: global rank, ``0..size-1``; rank 0 writes the run folder and reports.
        size: number of processes (the world size).
        device: this process's device (``cuda:LOCAL_RANK`` under NCCL).
        backend: ``"nccl"``, ``"gloo"``, or ``None`` for a single process.
    """

    rank: int = 0
    size: int = 1
    device: torch.device = _CPU
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _join(device_name: str, timeout_s: float) -> World:
    """Join the process group that ``torchrun`` set up in the environment."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available()):
        device, backend = torch.device("cpu"), "gloo"
    else:
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device_name} was asked for, but PyTorch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    # NCCL aborts a timed-out collective (instead of blocking forever) when asynchronous error handling is on.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "nccl":
        dist.init_process_group(backend, timeout=timeout, device_id=device)
    else:
        dist.init_process_group(backend, timeout=timeout)
    world = World(dist.get_rank(), dist.get_world_size(), device, backend)
    where: list[str | None] = [None] * world.size
    dist.all_gather_object(where, f"{device} on {socket.gethostname()}")
    if world.is_main:
        log.info(
            "distributed: world size %d, backend %s, timeout %g s; %s",
            world.size,
            backend,
            timeout_s,
            ", ".join(f"rank {r}: {w}" for r, w in enumerate(where)),
        )
    return world


@contextlib.contextmanager
def distributed_session(device_name: str = "auto", timeout_s: float = 600.0) -> Iterator[World]:
    """The world of this process: joined under ``torchrun``, a single process otherwise.

    Inside the session, processes other than rank 0 log warnings and errors only (rank 0 reports for all). A
    process group that the caller already set up is used as it is and left open.

    Args:
        device_name: ``auto``, ``cpu`` or ``cuda``; under ``torchrun`` each process takes the GPU of its local rank.
        timeout_s: how long a collective waits for the other processes before it fails with an error.

    Raises:
        RuntimeError: a collective failed or timed out, because another process raised, died or stopped answering.
    """
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        yield World(rank, size, device, dist.get_backend())
        return
    if not _launched():
        yield World(device=resolve_device(device_name))
        return
    world = _join(device_name, timeout_s)
    logger = logging.getLogger("fcnseg")
    level = logger.level
    if not world.is_main:
        logger.setLevel(logging.WARNING)
    try:
        yield world
    except RuntimeError as err:
        if not _lost_peer(err):
            raise
        raise RuntimeError(
            f"rank {world.rank} of {world.size}: another process of the run failed, died or did not answer within "
            f"--dist-timeout {timeout_s:g} s; the first error in the log (or a process killed for lack of memory) "
            f"is the cause. ({type(err).__name__}: {str(err).strip().splitlines()[-1][:300]})"
        ) from err
    finally:
        logger.setLevel(level)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _lost_peer(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed for want of a peer (Gloo raises plain RuntimeErrors)."""
    text = str(err)
    signs = ("Timed out", "timed out", "Connection closed", "Connection reset", "Broken pipe", "NCCL", "gloo")
    return isinstance(err, dist.DistError) or any(sign in text for sign in signs)


def share(batch: Sequence[T], world: World) -> list[T]:
    """This process's contiguous part of a global batch; together the parts are the batch, without repeats.

    With ``len(batch) = B * size`` every process gets ``B`` items (rank ``r``: items ``r*B .. (r+1)*B - 1``).
    """
    n = len(batch)
    return list(batch[world.rank * n // world.size : (world.rank + 1) * n // world.size])


def shard(dataset: Dataset, world: World) -> Dataset:
    """This process's contiguous part of a split for evaluation: each item is in exactly one part.

    Sizes differ by at most one when the split is not a multiple of the world size; nothing is padded or dropped,
    so the summed confusion matrix is the one of a single process. Rank 0's part starts the split, so its first
    images are the split's first (the report's samples).
    """
    if not world.enabled:
        return dataset
    n = len(dataset)
    return Subset(dataset, range(world.rank * n // world.size, (world.rank + 1) * n // world.size))


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (a new tensor on ``tensor``'s device); ``tensor`` itself alone."""
    if not world.enabled:
        return tensor
    total = tensor.detach().to(world.device, copy=True)
    dist.all_reduce(total)
    return total.to(tensor.device)


def global_loss(
    total: torch.Tensor, count: torch.Tensor, *, mean: bool, world: World
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to backpropagate here and the loss of the whole global batch, as one process would compute them.

    Args:
        total: this process's summed (weighted) per-pixel loss, a scalar with a gradient.
        count: this process's (weighted) number of labelled pixels.
        mean: normalise by the labelled pixels of the global batch (``--loss-norm mean``), else keep the sum.
        world: the processes; DistributedDataParallel averages their gradients, so each loss is scaled by the world
            size: ``(1/N) sum_r grad(N * S_r / C) = grad(sum_r S_r / C)``, the gradient of the global batch's loss.
            Dividing by each process's own pixel count instead would weight pixels unequally when the processes'
            crops hold different numbers of void pixels.

    Returns:
        ``(loss, value)``: the scalar to call ``backward`` on, and the detached loss of the global batch.
    """
    if not world.enabled:
        loss = total / count.clamp(min=1) if mean else total
        return loss, loss.detach()
    sums = all_reduce_sum(torch.stack([total.detach().double(), count.double()]), world)
    denominator = sums[1].clamp(min=1) if mean else torch.ones((), dtype=torch.float64, device=sums.device)
    loss = total * (world.size / denominator.float())
    return loss, (sums[0] / denominator).float()


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def sync_batch_norm(model: nn.Module, world: World) -> nn.Module:
    """Batch norm over the global batch (SyncBatchNorm) when distributed on GPUs; ``model`` as it is otherwise.

    PyTorch's SyncBatchNorm runs on GPUs only; on the CPU each process normalises with its own part of the batch
    (and DistributedDataParallel keeps rank 0's running statistics on every process).
    """
    if not world.enabled or not has_batch_norm(model):
        return model
    if world.device.type != "cuda":
        if world.is_main:
            log.warning("--sync-bn needs GPUs; on the CPU each process's batch norm uses its own part of the batch")
        return model
    log.info("batch norm synchronised across the %d processes (SyncBatchNorm)", world.size)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_model(model: nn.Module, world: World) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed (gradients averaged after each backward)."""
    if not world.enabled:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
