"""The training data stream: a seeded order per epoch and seeded augmentation per sample.

Each sample's augmentation is drawn from a generator seeded by (run seed, epoch, index), and each epoch's order
from (run seed, epoch), so a run is repeatable whatever the number of workers, and ``--resume`` continues with
exactly the batches the interrupted run would have seen. Under ``torchrun`` the batches are global: each process
takes its contiguous part of every batch, so N processes with batch B see exactly the samples of one process with
batch N x B, and a run may resume on another number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fcnseg.core.distributed import World, share
from fcnseg.data import DataError, pad_collate

Key = tuple[int, int]  # (epoch, index into the dataset)


@dataclass
class BadBatch:
    """A batch with an unreadable sample, passed to the main process instead of a worker traceback."""

    keys: list[Key]
    problems: list[str]


class SeededAugmentation(Dataset):
    """``dataset[(epoch, i)]`` -> ``transform(*base[i])`` with randomness fixed by ``(seed, epoch, i)``.

    A ``base`` with ``set_epoch`` (:class:`~fcnseg.data.raster_windows.RasterWindows`) is told the epoch first.
    """

    def __init__(self, base: Dataset, transform: Callable, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, Key] | BadBatch:
        epoch, index = key
        set_epoch = getattr(self.base, "set_epoch", None)
        if set_epoch is not None:  # a dataset that draws new samples each epoch (raster windows), in this process
            set_epoch(epoch)
        try:
            image, mask = self.base[index]
        except DataError as err:
            return BadBatch([key], [str(err)])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + index) % 2**63)
            image, mask = self.transform(image, mask)
        return image, mask, key


class EpochBatches(Sampler[list[Key]]):
    """Batches of ``(epoch, index)`` keys from ``(start_epoch, start_position)`` on, epoch after epoch.

    Each epoch is a permutation seeded by ``(seed, epoch)``; its incomplete last batch is dropped (when the split
    holds at least one full batch) so that batch-norm never sees a batch of one. ``batch_size`` is the global batch;
    with a ``world`` of several processes, each iterates over its own part of every batch (:func:`share`), while
    ``start_epoch`` and ``start_position`` count the samples of whole global batches.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_epoch: int = 0,
        start_position: int = 0,
        world: World | None = None,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_epoch, self.start_position = start_epoch, start_position
        self.world = world or World()

    def batches_per_epoch(self) -> int:
        return max(1, self.size // self.batch_size)

    def epoch_length(self) -> int:
        """Samples drawn per epoch."""
        return min(self.size, self.batches_per_epoch() * self.batch_size)

    def advance(self, keys: list[Key]) -> None:
        """Move the start past the global batch of which ``keys`` is (this process's part), so that a new iterator
        (or a resumed run) continues after it."""
        epoch = keys[-1][0]
        start = self.start_position if epoch == self.start_epoch else 0
        position = start + min(self.batch_size, self.size - start)  # the length of the global batch
        if position >= self.epoch_length():
            epoch, position = epoch + 1, 0
        self.start_epoch, self.start_position = epoch, position

    def __iter__(self) -> Iterator[list[Key]]:
        epoch, position = self.start_epoch, self.start_position
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            for start in range(position, self.epoch_length(), self.batch_size):
                yield share([(epoch, int(i)) for i in order[start : start + self.batch_size]], self.world)
            epoch, position = epoch + 1, 0


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[Key]] | BadBatch:
    bad = [item for item in items if isinstance(item, BadBatch)]
    if bad:
        return BadBatch([k for b in bad for k in b.keys], [m for b in bad for m in b.problems])
    images, masks = pad_collate([(image, mask) for image, mask, _ in items])
    return images, masks, [key for _, _, key in items]


def training_loader(dataset: SeededAugmentation, sampler: EpochBatches, *, workers: int, pin: bool) -> DataLoader:
    """An endless loader of ``(images (N, 3, h, w), masks (N, h, w), keys)``.

    The loader draws its workers' base seed from a generator of its own, not from the global RNG, whose state
    (dropout masks) a resumed run restores from the checkpoint: the augmentation is seeded per sample anyway.
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),
    )
