"""``SceneTextDataModule``: LMDB train/val/test data for CLIP4STR (spec §3.3, §3.4)."""

import os
import random
from functools import partial
from pathlib import PurePath
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from . import test_sets
from .dataset import LmdbDataset, build_tree_dataset
from .sampler import ResumableSampler
from .transforms import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, get_transform


def label_lengths(dataset: Dataset) -> List[int]:
    """Label length of every sample of an LMDB dataset or a ConcatDataset of them, in dataset order."""
    if isinstance(dataset, ConcatDataset):
        return [n for d in dataset.datasets for n in label_lengths(d)]
    return [len(label) for label in dataset.labels]


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: re-seeds python ``random``, NumPy and torch in a worker, mixing in the rank.

    The augmentation draws from python ``random`` (op probability, sign, resampling filter) and NumPy (op choice,
    noise). PyTorch already seeds all three in each worker from ``base_seed + worker_id``, where the DataLoader draws
    ``base_seed`` from its generator whenever workers start (so it is a function of the module's ``seed``, and
    differs per epoch unless workers are persistent, whose RNG streams then simply continue). That seed does not
    depend on the process rank, and the generator is seeded identically on every rank, so without the rank
    data-parallel processes would augment in lockstep.

    Args:
        worker_id: given by the DataLoader.
        rank: global rank of this process, bound with ``functools.partial`` (picklable).
    """
    seq = np.random.SeedSequence([torch.initial_seed(), worker_id, rank])
    torch_seed, np_seed, py_seed = seq.generate_state(3, dtype=np.uint64).tolist()
    torch.manual_seed(torch_seed)
    np.random.seed(np_seed & 0xFFFFFFFF)  # the legacy global NumPy RNG takes 32-bit seeds
    random.seed(py_seed)


class SceneTextDataModule(pl.LightningDataModule):
    """LMDB scene-text data laid out as ``<root_dir>/{train/<train_dir>,val,test/<name>}`` (spec §3.3).

    Train and val images are normalised with the OpenAI CLIP statistics (``openai_meanstd``, else 0.5/0.5); test
    images with 0.5/0.5 like the original's ``test.py`` (spec §3.4 quirk; the published numbers were produced so)
    unless ``test_openai_meanstd``. Batches are default-collated: ``(images (B, 3, H, W) float32, labels)`` with the
    labels a tuple of B str.

    Args:
        root_dir: dataset root.
        train_dir: sub-directory (or several, e.g. a mix) of ``<root_dir>/train`` searched for LMDBs.
        img_size: (H, W) after resizing.
        max_label_length: labels longer than this before charset filtering are skipped.
        charset_train: charset of the training labels.
        charset_test: charset of validation and test labels.
        batch_size: per-process batch size.
        num_workers: DataLoader workers.
        augment: RandAugment on training images.
        remove_whitespace: strip whitespace from labels.
        normalize_unicode: NFKD-to-ASCII labels for an ASCII charset, NFC otherwise (see ``LmdbDataset``).
        min_image_dim: skip images with a smaller side (0 disables).
        rotation: test-time rotation in degrees (counter-clockwise, canvas expanded).
        collate_fn: DataLoader collate function (None: default collation).
        openai_meanstd: train/val normalisation with the OpenAI CLIP statistics instead of 0.5/0.5.
        seed: seeds the shuffling generator and, through it, the worker RNGs.
        test_openai_meanstd: test normalisation with the OpenAI CLIP statistics instead of 0.5/0.5.
        pin_memory: DataLoader ``pin_memory``; None means only when CUDA is available (no CPU warning).
        curriculum_samples: the first N training samples (at most one epoch) go from short to long labels.
        bucket_batches: after the curriculum, runs of this many training batches are sorted by label length and
            cut into batches in a shuffled order (0: plain shuffling); see :class:`ResumableSampler`.

    Raises:
        FileNotFoundError: ``root_dir`` does not exist.
    """

    # The test sets by table (strhub.data.test_sets), where the original's users find them.
    TEST_BENCHMARK_SUB = test_sets.TEST_BENCHMARK_SUB
    TEST_BENCHMARK = test_sets.TEST_BENCHMARK
    TEST_NEW = test_sets.TEST_NEW
    TEST_ALL = test_sets.TEST_ALL

    # The original has an ``output_url`` argument between collate_fn and openai_meanstd, used only to copy outputs to
    # remote storage; it is not kept. seed, test_openai_meanstd and pin_memory are additions.
    def __init__(
        self,
        root_dir: Union[str, os.PathLike],
        train_dir: Union[str, Sequence[str]],
        img_size: Sequence[int],
        max_label_length: int,
        charset_train: str,
        charset_test: str,
        batch_size: int,
        num_workers: int,
        augment: bool,
        remove_whitespace: bool = True,
        normalize_unicode: bool = True,
        min_image_dim: int = 0,
        rotation: int = 0,
        collate_fn: Optional[Callable] = None,
        openai_meanstd: bool = True,
        seed: int = 0,
        test_openai_meanstd: bool = False,
        pin_memory: Optional[bool] = None,
        curriculum_samples: int = 0,
        bucket_batches: int = 0,
    ) -> None:
        super().__init__()
        if not os.path.isdir(root_dir):
            raise FileNotFoundError(f'data root_dir not found: {root_dir}')
        self.root_dir = str(root_dir)
        self.train_dir = (train_dir,) if isinstance(train_dir, (str, os.PathLike)) else tuple(train_dir)
        self.img_size = tuple(img_size)
        self.max_label_length = max_label_length
        self.charset_train = charset_train
        self.charset_test = charset_test
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.remove_whitespace = remove_whitespace
        self.normalize_unicode = normalize_unicode
        self.min_image_dim = min_image_dim
        self.rotation = rotation
        self.collate_fn = collate_fn
        self.seed = seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.curriculum_samples = curriculum_samples
        self.bucket_batches = bucket_batches
        self.mean = OPENAI_DATASET_MEAN if openai_meanstd else 0.5
        self.std = OPENAI_DATASET_STD if openai_meanstd else 0.5
        self.test_mean = OPENAI_DATASET_MEAN if test_openai_meanstd else 0.5
        self.test_std = OPENAI_DATASET_STD if test_openai_meanstd else 0.5
        self._train_dataset: Optional[Dataset] = None
        self._val_dataset: Optional[Dataset] = None
        self._resume_position: Optional[Dict[str, int]] = None

    def _dataset_kwargs(self, charset: str) -> dict:
        return dict(
            charset=charset,
            max_label_len=self.max_label_length,
            min_image_dim=self.min_image_dim,
            remove_whitespace=self.remove_whitespace,
            normalize_unicode=self.normalize_unicode,
        )

    def _require_dir(self, path: PurePath, what: str) -> str:
        if not os.path.isdir(path):
            raise FileNotFoundError(f'{what} directory not found: {path}')
        return str(path)

    @property
    def train_dataset(self) -> Dataset:
        """Every LMDB under ``<root_dir>/train/<train_dir>`` (each dir, in the given order), ``charset_train``."""
        if self._train_dataset is None:
            transform = get_transform(self.img_size, self.augment, mean=self.mean, std=self.std)
            roots = [self._require_dir(PurePath(self.root_dir, 'train', d), 'training data') for d in self.train_dir]
            datasets = [
                build_tree_dataset(r, transform=transform, **self._dataset_kwargs(self.charset_train)) for r in roots
            ]
            self._train_dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
        return self._train_dataset

    @property
    def val_dataset(self) -> Dataset:
        """Every LMDB under ``<root_dir>/val``, filtered with ``charset_test``, train normalisation, no augment."""
        if self._val_dataset is None:
            transform = get_transform(self.img_size, mean=self.mean, std=self.std)
            root = self._require_dir(PurePath(self.root_dir, 'val'), 'validation data')
            # verify_images: a bad record is excluded (and named once), never replaced by another sample and scored.
            self._val_dataset = build_tree_dataset(
                root, transform=transform, verify_images=True, **self._dataset_kwargs(self.charset_test)
            )
        return self._val_dataset

    def _world(self) -> Tuple[int, int]:
        """(number of processes, this process's rank) of the running trainer; (1, 0) outside training."""
        trainer = getattr(self, 'trainer', None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def state_dict(self) -> Dict[str, Dict[str, int]]:
        """Saved in checkpoints by Lightning: where training is in the current epoch."""
        trainer = getattr(self, 'trainer', None)
        if trainer is None:
            return {}
        # 'processed', not 'completed': a save in on_train_batch_end (Ctrl-C, step snapshots) comes before Lightning
        # counts the batch completed; after it, and at validation, the two are equal.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {'train_position': {'epoch': trainer.current_epoch, 'batches': batches}}

    def load_state_dict(self, state: Dict[str, Dict[str, int]]) -> None:
        """Restored by Lightning before the loaders are built: the next train loader resumes mid-epoch."""
        self._resume_position = state.get('train_position')

    def _loader(
        self, dataset: Dataset, shuffle: bool, persistent: bool, sharded: bool = False, collate_fn=None
    ) -> DataLoader:
        # The order is a function of (seed, epoch) alone, and so are the worker seeds (drawn from `generator`). With
        # num_workers=0 the augmentation uses the main process RNGs (seed them with pl.seed_everything). Train and
        # val loaders are sharded across processes here (the trainer runs with use_distributed_sampler=False).
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        replicas, rank = self._world() if sharded else (1, 0)
        # Only the shuffled (training) order has a curriculum and length buckets.
        by_length = (self.curriculum_samples, self.bucket_batches) if shuffle else (0, 0)
        lengths = label_lengths(dataset) if any(by_length) else None
        sampler = ResumableSampler(
            len(dataset), shuffle, self.seed, replicas, rank, lengths, *by_length, self.batch_size
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=collate_fn or self.collate_fn,
            worker_init_fn=partial(seed_worker, rank=rank),
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_dataset, shuffle=True, persistent=True, sharded=True)
        if self._resume_position:
            pos = self._resume_position
            if 0 < pos['batches'] < len(loader):  # an end-of-epoch checkpoint needs no skipping
                loader.sampler.resume(pos['epoch'], pos['batches'] * self.batch_size)
            self._resume_position = None
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, persistent=True, sharded=True)

    def test_dataloaders(self, subset: Sequence[str], images: bool = False) -> Dict[str, DataLoader]:
        """One loader per test set ``<root_dir>/test/<name>`` (a single LMDB each), in ``subset`` order.
        With ``images`` its batches are lists of the RGB images and of their labels, untransformed.

        Uses ``charset_test`` and 0.5/0.5 normalisation unless ``test_openai_meanstd``. Test loaders are not
        persistent (as the original): they are iterated once. ``strhub.data.test_sets`` finds the sets present.
        Every image is decoded first: unreadable records are excluded, listed in ``loader.dataset.bad_records``.

        Raises:
            FileNotFoundError: a requested test set does not exist.
        """
        transform = None
        if not images:
            transform = get_transform(self.img_size, rotation=self.rotation, mean=self.test_mean, std=self.test_std)
        root = PurePath(self.root_dir, 'test')
        datasets = {
            s: LmdbDataset(root / s, transform=transform, verify_images=True, **self._dataset_kwargs(self.charset_test))
            for s in subset
        }
        collate = _as_lists if images else None
        return {k: self._loader(v, shuffle=False, persistent=False, collate_fn=collate) for k, v in datasets.items()}


def _as_lists(batch):
    images, labels = zip(*batch)
    return list(images), list(labels)
