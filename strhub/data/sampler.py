"""Sampling that makes an interrupted run resume exactly: a per-(seed, epoch) order, sharded across processes,
that can start an epoch part-way through."""

from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices for one of ``num_replicas`` processes (``DistributedSampler``'s padding and striding).

    The order of an epoch depends only on ``(seed, epoch)``, so a resumed run sees what the uninterrupted one would.
    Lightning calls :meth:`set_epoch` at every epoch start.

    Curriculum: the first ``curriculum_samples`` samples of the run (counted over all processes) go from short to long
    labels: they are a uniformly drawn part of the epoch, ordered by ``length + uniform(0, CURRICULUM_SPREAD)``
    (neighbouring lengths mix), and the rest of the epoch follows shuffled. A curriculum at least as long as an epoch
    orders the whole first epoch; later epochs are always shuffled.

    Length buckets (``bucket_batches`` > 0, shuffled order only): after the curriculum, each run of ``bucket_batches``
    consecutive batches of a process is made of the same samples sorted by label length, cut into batches whose
    order within the run is shuffled (a last partial batch stays last). The decoders' cost grows with the longest
    label of a batch, so batches of like lengths pad less; which samples meet in a run stays random.
    """

    CURRICULUM_SPREAD = 3.0

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        lengths: Optional[Sequence[int]] = None,
        curriculum_samples: int = 0,
        bucket_batches: int = 0,
        batch_size: int = 1,
    ) -> None:
        if (curriculum_samples > 0 or bucket_batches > 0) and (lengths is None or len(lengths) != size):
            raise ValueError('a curriculum or length buckets need the label length of every sample')
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.lengths = torch.as_tensor(lengths, dtype=torch.float64) if lengths is not None else None
        self.curriculum_samples = curriculum_samples
        self.bucket_batches, self.batch_size = bucket_batches, batch_size
        self.epoch = 0
        self._skip = {}  # epoch -> samples of this process consumed before an interruption

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """Passes over ``epoch`` start after its first ``consumed`` samples (of this process); later epochs are whole.

        (Lightning may create the epoch's iterator more than once, so the skip is not consumed by iterating.)
        """
        self.epoch = epoch
        self._skip = {epoch: consumed}

    def _indices(self) -> List[int]:
        head = 0
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g)
            head = min(self.size, self.curriculum_samples) if self.epoch == 0 else 0
            if head > 0:
                noise = self.CURRICULUM_SPREAD * torch.rand(head, generator=g, dtype=torch.float64)
                part = order[:head]
                order[:head] = part[torch.argsort(self.lengths[part] + noise)]
            order = order.tolist()
        else:
            order = list(range(self.size))
        total = -(-self.size // self.num_replicas) * self.num_replicas
        order += order[: total - len(order)]  # pad so every process gets as many samples
        mine = order[self.rank : total : self.num_replicas]
        if self.shuffle and self.bucket_batches > 0:
            mine = self._bucketed(mine, len(range(self.rank, head, self.num_replicas)), g)
        return mine

    def _bucketed(self, indices: List[int], curriculum: int, g: torch.Generator) -> List[int]:
        """``indices`` with the runs of ``bucket_batches`` batches after the first ``curriculum`` sorted by length."""
        bs = self.batch_size
        start = -(-curriculum // bs) * bs  # runs start on a batch boundary
        out, run = indices[:start], self.bucket_batches * bs
        for i in range(start, len(indices), run):
            part = torch.as_tensor(indices[i : i + run])
            part = part[torch.argsort(self.lengths[part], stable=True)].tolist()  # stable: ties stay in random order
            batches = [part[k : k + bs] for k in range(0, len(part), bs)]
            full = len(part) // bs
            for b in torch.randperm(full, generator=g).tolist() + list(range(full, len(batches))):
                out += batches[b]
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self._skip.get(self.epoch, 0) :])

    def __len__(self) -> int:
        # The whole epoch, also when resuming: Lightning counts the batches done before the interruption into the
        # epoch (its batch index continues) and expects the loader to yield only the rest.
        return -(-self.size // self.num_replicas)
