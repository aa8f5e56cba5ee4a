"""The training data in a reproducible order: which images make up step i, and how each is flipped,
are a pure function of (seed, i). That is what lets `--resume` continue exactly where a run stopped,
whatever the number of data-loading workers.

- `ShuffledBatches` deals out batches of (index, sample seed) forever, epoch after epoch; epoch e is a
  permutation drawn from a generator seeded with (seed, e). It can start at any step, and with several
  processes each takes its own share of every epoch, as torch's DistributedSampler does.
- `AugmentedSamples` seeds the random augmentation of each sample with its sample seed, so a flip does
  not depend on which worker loaded the image, nor on what that worker loaded before.
"""
import math
import random

import numpy as np
import torch


class ShuffledBatches(torch.utils.data.Sampler):
    """An endless sequence of batches, each a list of (dataset index, sample seed) pairs.

    Args:
        dataset_size: number of samples N.
        batch_size: samples per batch and per process.
        seed: the run's seed.
        rank, world_size: this process and the number of processes. Each epoch's permutation is padded
            (by repeating its start) to a multiple of world_size and dealt out rank::world_size, so all
            processes take the same number of steps per epoch.
        start: the step to begin at (0 for a new run, the checkpoint's iteration when resuming).
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        if dataset_size == 0:
            raise ValueError("the training set is empty")
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.samples_per_process = math.ceil(dataset_size / world_size)
        self.batches_per_epoch = math.ceil(self.samples_per_process / batch_size)

    def epoch_samples(self, epoch: int) -> list[tuple[int, int]]:
        """This process's (index, sample seed) pairs of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.dataset_size)
        sample_seeds = rng.integers(2**62, size=self.dataset_size)
        padded = np.resize(order, self.samples_per_process * self.world_size)  # repeats the start
        mine = padded[self.rank :: self.world_size]
        return [(int(i), int(sample_seeds[i])) for i in mine]

    def __iter__(self):
        step = self.start
        epoch, samples = None, []
        while True:
            step_epoch, step_in_epoch = divmod(step, self.batches_per_epoch)
            if step_epoch != epoch:
                epoch, samples = step_epoch, self.epoch_samples(step_epoch)
            yield samples[step_in_epoch * self.batch_size : (step_in_epoch + 1) * self.batch_size]
            step += 1


class AugmentedSamples(torch.utils.data.Dataset):
    """`dataset[index]` passed through `transforms`, with torch's random generator seeded per sample.

    Indexed by the (index, sample seed) pairs that ShuffledBatches yields. The seeding happens inside
    `fork_rng`, which puts the generator back afterwards: loading data in the main process (workers=0)
    leaves the random numbers the model draws (anchor and RoI sampling) untouched.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, transforms):
        self.dataset, self.transforms = dataset, transforms

    def __getitem__(self, index_and_seed: tuple[int, int]):
        index, sample_seed = index_and_seed
        image, target = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transforms(image, target)

    def __len__(self) -> int:
        return len(self.dataset)


def seed_worker(worker_id: int) -> None:
    """DataLoader's worker_init_fn: seed Python's and NumPy's generators from the seed torch gave this
    worker (derived from the loader's own seeded generator), for transforms that draw from them."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
