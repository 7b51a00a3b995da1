"""Batches straight from in-memory tensors: one gather per batch, no per-image Python, no workers.

``IndexBatchStream`` yields, per step, one batch from each named index set (the first sets the epoch
length, the others cycle), ordered by a permutation seeded with (seed, epoch) and sharded by rank the way
``DistributedSampler`` does, so every rank draws from the same split. ``ResumableLoader`` exposes the
position inside the epoch to Lightning's checkpoints so a run resumed mid-epoch continues with the next
batch (Lightning's stateful-dataloader protocol).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Optional

import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_nas.reproducibility import mix_seed


class IndexBatchStream(IterableDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, index_sets: dict[str, torch.Tensor],
                 batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, epoch_fn: Optional[Callable[[], int]] = None):
        super().__init__()
        self.images, self.labels = images, labels
        self.index_sets = index_sets
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.position: tuple[int, int] = (-1, 0)  # (epoch, batches handed out) for checkpoints
        self._resume: Optional[tuple[int, int]] = None

    def _shard(self, idx: torch.Tensor, epoch: int, stream: int) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, stream))
            idx = idx[torch.randperm(len(idx), generator=g)]
        if self.world_size > 1:
            if self.shuffle:  # pad like DistributedSampler so every rank runs the same number of steps
                total = math.ceil(len(idx) / self.world_size) * self.world_size
                idx = torch.cat([idx, idx[: total - len(idx)]])
            idx = idx[self.rank::self.world_size]
        return idx

    def _steps(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        first = next(iter(self.index_sets.values()))
        n = len(first)
        if self.world_size > 1:
            n = math.ceil(n / self.world_size) if self.shuffle else len(range(self.rank, n, self.world_size))
        return self._steps(n)

    def __iter__(self) -> Iterator[dict]:
        epoch = int(self.epoch_fn())
        start = 0
        if self._resume is not None:
            # Lightning may create the iterator more than once in the resumed epoch (setup, then the epoch
            # loop): the position holds for that whole epoch and is dropped once a later epoch starts.
            if self._resume[0] == epoch:
                start = self._resume[1]
            else:
                self._resume = None
        shards = {name: self._shard(idx, epoch, k) for k, (name, idx) in enumerate(self.index_sets.items())}
        first = next(iter(shards))
        steps = self._steps(len(shards[first]))
        b = self.batch_size
        for step in range(start, steps):
            self.position = (epoch, step + 1)
            batch: dict = {"seed": mix_seed(self.seed, epoch, step, self.rank, 7)}
            for name, idx in shards.items():
                if name == first:
                    sel = idx[step * b:(step + 1) * b]
                else:  # cycle the shorter streams, as DARTS draws a fresh validation batch every step
                    pos = (torch.arange(step * b, step * b + b)) % len(idx)
                    sel = idx[pos]
                batch[name] = (self.images[sel], self.labels[sel])
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.position[0], "batches": self.position[1]}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))


class ResumableLoader(DataLoader):
    """A DataLoader over an ``IndexBatchStream`` that Lightning checkpoints and restores.

    The saved position is the number of batches the training loop has *processed* (read from the trainer
    via ``progress_fn``), not the number pulled by Lightning's prefetching fetcher.
    """

    def __init__(self, stream: IndexBatchStream, progress_fn: Optional[Callable[[], tuple[int, int]]] = None,
                 pin_memory: bool = False):
        # Creating an iterator draws a base seed from `generator`: a private one keeps those draws out of the
        # global RNG stream (drop path, dropout), which a resumed run must see unchanged.
        super().__init__(stream, batch_size=None, num_workers=0, pin_memory=pin_memory,
                         generator=torch.Generator().manual_seed(0))
        self.stream = stream
        self.progress_fn = progress_fn

    def state_dict(self) -> dict:
        if self.progress_fn is not None:
            epoch, processed = self.progress_fn()
            return {"epoch": epoch, "batches": processed}
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
