"""LightningDataModules over in-memory uint8 datasets.

``SearchDataModule`` gives each training step a train batch and a validation batch from a seeded split
of the training set (DARTS: train_portion 0.5), identical on every rank; its val loop runs over the
held-out split (DARTS's ``valid_acc``) and its test loop over the test set. ``ClassificationDataModule``
trains on the whole training set and validates/tests on the test set (DARTS evaluation protocol).
Augmentation runs batched on the device in ``on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from lightning_nas.data.augment import BatchAugment
from lightning_nas.data.batches import IndexBatchStream, ResumableLoader
from lightning_nas.data.sources import Dataset, ImageData, load_dataset
from lightning_nas.errors import ConfigError

DatasetName = Literal["cifar10", "cifar100", "image_folder", "digits"]


class InMemoryDataModule(pl.LightningDataModule):
    """Loading, resizing, subsetting and device augmentation shared by the datamodules."""

    has_images: bool = True  # False: a discrete search that only queries a table

    def __init__(self, dataset: DatasetName = "digits", data_dir: Optional[str] = None, download: bool = False,
                 batch_size: int = 64, eval_batch_size: int = 256, seed: int = 2,
                 max_train_samples: Optional[int] = None, max_test_samples: Optional[int] = None,
                 image_size: Optional[int] = None, crop_padding: Optional[int] = None, hflip: Optional[bool] = None,
                 cutout_length: int = 0, cache_dir: Optional[str] = None,
                 resident: Literal["auto", "device", "host"] = "auto"):
        """
        Args:
            resident: where the uint8 images live during the run: ``device`` (the trainer's; batches are gathered
                and augmented there and never cross the bus), ``host`` (gathered on the host, copied per batch),
                ``auto`` (default): the device when it is a GPU with room for them (at most half its free memory),
                else the host.
        """
        super().__init__()
        if resident not in ("auto", "device", "host"):
            raise ConfigError(f"data.resident must be 'auto', 'device' or 'host', got {resident!r}")
        self.resident = resident
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value}")
        if image_size is not None and (image_size < 8 or image_size % 4):
            raise ConfigError(f"data.image_size must be a multiple of 4 and at least 8, got {image_size}: the search "
                              "spaces halve the resolution twice with factorized reductions, which need even sizes")
        if cutout_length < 0 or (crop_padding is not None and crop_padding < 0):
            raise ConfigError("data.cutout_length and data.crop_padding must be >= 0")
        self.dataset_name = dataset
        self.data_dir, self.download, self.cache_dir = data_dir, download, cache_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed = seed
        self.max_train_samples, self.max_test_samples = max_train_samples, max_test_samples
        self.image_size = image_size
        self._crop_padding, self._hflip, self.cutout_length = crop_padding, hflip, cutout_length
        self._data: Optional[Dataset] = None
        self._augment: Optional[BatchAugment] = None

    # ---- the data ------------------------------------------------------------------------------
    @property
    def data(self) -> Dataset:
        if self._data is None:
            data = load_dataset(self.dataset_name, self.data_dir, self.download, self.cache_dir)
            data.train = self._subset(data.train, self.max_train_samples, "train")
            data.test = self._subset(data.test, self.max_test_samples, "test")
            if self.image_size is not None and self.image_size != data.image_size:
                data.train = _resize(data.train, self.image_size)
                data.test = _resize(data.test, self.image_size)
            self._data = data
        return self._data

    def _subset(self, split: ImageData, limit: Optional[int], what: str) -> ImageData:
        """A seeded random subset (fixed seed 0: part of the dataset definition, not of the run)."""
        if limit is None or limit >= len(split):
            return split
        if limit < 1:
            raise ConfigError(f"data.max_{what}_samples must be positive, got {limit}")
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:limit].sort().values
        return ImageData(split.images[idx], split.labels[idx])

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def in_channels(self) -> int:
        return self.data.in_channels

    @property
    def crop_padding(self) -> int:
        if self._crop_padding is not None:
            return self._crop_padding
        return 4 if self.data.image_size >= 32 else max(1, self.data.image_size // 8)

    @property
    def hflip(self) -> bool:
        return self._hflip if self._hflip is not None else self.dataset_name != "digits"

    @property
    def augment(self) -> BatchAugment:
        if self._augment is None:
            self._augment = BatchAugment(self.data.mean, self.data.std, self.crop_padding, self.hflip,
                                         self.cutout_length)
        return self._augment

    def describe(self) -> dict:
        d = self.data
        return {"dataset": d.name, "train_size": len(d.train), "test_size": len(d.test),
                "num_classes": d.num_classes, "image_size": d.image_size, "in_channels": d.in_channels}

    # ---- where the images live --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Moves the images to the trainer's device when ``resident`` says so (every rank holds its own copy)."""
        if self.trainer is None or not self.has_images:
            return
        device, data = self.trainer.strategy.root_device, self.data
        if not resident_on_device(self.resident, device, _nbytes(data.train) + _nbytes(data.test)):
            return
        data.train = ImageData(data.train.images.to(device), data.train.labels.to(device))
        data.test = ImageData(data.test.images.to(device), data.test.labels.to(device))

    # ---- distributed context ------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _progress(self) -> tuple[int, int]:
        trainer = self.trainer
        assert trainer is not None
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, split: ImageData, index_sets: dict[str, torch.Tensor], batch_size: int, shuffle: bool,
                resumable: bool) -> ResumableLoader:
        rank, world = self._rank_world()
        stream = IndexBatchStream(split.images, split.labels, index_sets, batch_size, self.seed, shuffle=shuffle,
                                  rank=rank, world_size=world, epoch_fn=self._epoch)
        pin = torch.cuda.is_available() and split.images.device.type == "cpu"
        return ResumableLoader(stream, self._progress if resumable and self.trainer is not None else None, pin)

    def _eval_loader(self, split: ImageData) -> ResumableLoader:
        return self._loader(split, {"eval": eval_order(split.labels)}, self.eval_batch_size, False, False)

    def test_dataloader(self) -> ResumableLoader:
        return self._eval_loader(self.data.test)

    # ---- fixed probe batches for the analysis callbacks ------------------------------------------------------
    def _heldout(self) -> ImageData:
        """The held-out images: the alpha split of a search, the test set of a plain training."""
        raise NotImplementedError

    def _training_split(self) -> ImageData:
        """The images the weights train on."""
        raise NotImplementedError

    def fixed_val_batches(self, n: Optional[int], batch_size: Optional[int] = None) -> list[dict]:
        """The first ``n`` held-out batches (all with ``n=None``; ``batch_size``, default the eval batch size;
        in ``eval_order``), the same on every rank: a fixed probe set for analysis callbacks and selection."""
        return self._fixed_batches(self._heldout(), n, batch_size)

    def fixed_train_batches(self, n: int, batch_size: Optional[int] = None) -> list[dict]:
        """The first ``n`` batches of the weights' training images (in ``eval_order``, not augmented), the same on
        every rank: BN re-calibration of single-path children, training-loss probes."""
        return self._fixed_batches(self._training_split(), n, batch_size)

    def _fixed_batches(self, split: ImageData, n: Optional[int], batch_size: Optional[int] = None) -> list[dict]:
        stream = IndexBatchStream(split.images, split.labels, {"eval": eval_order(split.labels)},
                                  batch_size or self.eval_batch_size, self.seed, shuffle=False)
        return list(stream) if n is None else [batch for _, batch in zip(range(n), stream)]

    def device_batches(self, batches: list[dict], trainer: pl.Trainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``fixed_*_batches`` moved to the trainer's device and normalised, as (x, y) pairs. The strategy's
        ``batch_to_device`` runs the transfer hooks, ``on_after_batch_transfer`` (the normalisation) included:
        it must not be applied a second time."""
        return [trainer.strategy.batch_to_device(b)["eval"] for b in batches]

    # ---- device-side augmentation -------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        out: dict = {}
        for key, value in batch.items():
            if key == "seed":
                continue
            x, y = value
            if key == "eval":
                out[key] = (self.augment.normalize(x), y)
            else:  # train and val batches of a search are both augmented, as in DARTS
                out[key] = (self.augment(x, batch["seed"] + (0 if key == "train" else 1)), y)
        return out


def eval_order(labels: torch.Tensor) -> torch.Tensor:
    """The order validation and test visit a split in: as stored, unless it is sorted by class (an image folder's
    test split), which a limited validation (``trainer.limit_val_batches``) would see as one class only: then a
    fixed shuffle (seed 0, the same for every run)."""
    n = len(labels)
    if n > 1 and bool((labels[1:] >= labels[:-1]).all()) and labels[0] != labels[-1]:
        return torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return torch.arange(n)


def _nbytes(split: ImageData) -> int:
    return split.images.numel() * split.images.element_size() + split.labels.numel() * 8


def resident_on_device(resident: str, device: torch.device, nbytes: int, free_bytes: Optional[int] = None) -> bool:
    """Whether ``nbytes`` of images go to ``device``: always for ``device``, never for ``host``; ``auto``: on a GPU
    when they take at most half of its free memory (``free_bytes``, default the device's own count)."""
    if resident == "host" or device.type == "cpu":
        return False  # on the CPU, host and device are one memory
    if resident == "device":
        return True
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    return nbytes <= free_bytes // 2


def _resize(split: ImageData, size: int) -> ImageData:
    """Resize a whole split once (antialiased bilinear), keeping uint8."""
    x = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ImageData(x.round_().clamp_(0, 255).to(torch.uint8), split.labels)


class SearchDataModule(InMemoryDataModule):
    """Bilevel search data: ``train_portion`` of the training set trains w, the rest trains alpha."""

    def __init__(self, *args, train_portion: float = 0.5, split: Literal["random", "sequential"] = "random",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 < train_portion < 1.0:
            raise ConfigError(f"data.train_portion must be in (0, 1), got {train_portion}")
        self.train_portion = train_portion
        self.split = split

    def split_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w indices, alpha indices). ``sequential`` is the official code's first-half/second-half split;
        ``random`` (default) permutes with the run seed first, which image folders sorted by class need."""
        n = len(self.data.train)
        cut = int(n * self.train_portion)
        if self.split == "sequential":
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return order[:cut], order[cut:]

    def train_dataloader(self) -> ResumableLoader:
        w_idx, a_idx = self.split_indices()
        return self._loader(self.data.train, {"train": w_idx, "val": a_idx}, self.batch_size, True, True)

    def _heldout(self) -> ImageData:
        _, a_idx = self.split_indices()
        train = self.data.train
        return ImageData(train.images[a_idx], train.labels[a_idx])

    def val_dataloader(self) -> ResumableLoader:
        return self._eval_loader(self._heldout())

    def _training_split(self) -> ImageData:
        w_idx, _ = self.split_indices()
        train = self.data.train
        return ImageData(train.images[w_idx], train.labels[w_idx])

    def child_eval_batches(self, eval_batches: int, calib_batches: int, trainer: pl.Trainer
                           ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
        """What evaluating single-path children needs, on the trainer's device: the first ``eval_batches``
        held-out batches and the first ``calib_batches`` training batches (BN re-calibration)."""
        return (self.device_batches(self.fixed_val_batches(eval_batches), trainer),
                self.device_batches(self.fixed_train_batches(calib_batches), trainer))


class ClassificationDataModule(InMemoryDataModule):
    """Plain training on the whole training set; validation and test on the test set."""

    def _heldout(self) -> ImageData:
        return self.data.test

    def _training_split(self) -> ImageData:
        return self.data.train

    def train_dataloader(self) -> ResumableLoader:
        train = self._training_split()
        return self._loader(train, {"train": torch.arange(len(train))}, self.batch_size, True, True)

    def val_dataloader(self) -> ResumableLoader:
        return self._eval_loader(self._heldout())


class _RepeatedBatch(IterableDataset):
    """The same batch ``steps`` times: one step of a discrete search evaluates one architecture."""

    def __init__(self, batch: dict, steps: int):
        super().__init__()
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict]:
        for _ in range(self.steps):
            yield self.batch


class _RepeatedBatchLoader(DataLoader):
    """Loads ``_RepeatedBatch``: every batch is the same one, so there is no position to save, and a mid-epoch
    checkpoint resumes it exactly (Lightning warns about loaders without ``state_dict``)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ProxyDataModule(InMemoryDataModule):
    """Data of discrete searches (random search, REA, AREA, NASWOT): each training step evaluates one
    architecture, an epoch is ``steps_per_epoch`` of them. Every step sees the same proxy batch, ``batch_size``
    images drawn without augmentation from the training set with the run seed (NASWOT: 128 CIFAR-10 train
    images). ``dataset: null`` gives no images at all, for searches that only query a tabular benchmark."""

    def __init__(self, dataset: Optional[DatasetName] = "cifar10", *args, batch_size: int = 128,
                 steps_per_epoch: int = 100, **kwargs):
        # without images the parent's dataset name is a placeholder that is never loaded
        super().__init__(dataset or "digits", *args, batch_size=batch_size, **kwargs)
        if steps_per_epoch < 1:
            raise ConfigError(f"data.steps_per_epoch must be a positive integer, got {steps_per_epoch}")
        self.has_images = dataset is not None
        self.steps_per_epoch = steps_per_epoch

    @property
    def num_classes(self) -> Optional[int]:  # type: ignore[override]
        return self.data.num_classes if self.has_images else None

    @property
    def in_channels(self) -> int:
        return self.data.in_channels if self.has_images else 3

    def describe(self) -> dict:
        return super().describe() if self.has_images else {"dataset": None}

    def proxy_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` training images (uint8) and labels, a random draw seeded by the run seed."""
        train = self.data.train
        if self.batch_size > len(train):
            raise ConfigError(f"data.batch_size {self.batch_size} exceeds the {len(train)} training images")
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[: self.batch_size]
        return train.images[idx], train.labels[idx]

    def train_dataloader(self) -> _RepeatedBatchLoader:
        batch = {"proxy": self.proxy_batch()} if self.has_images else {}
        return _RepeatedBatchLoader(_RepeatedBatch(batch, self.steps_per_epoch), batch_size=None, num_workers=0,
                          generator=torch.Generator().manual_seed(0))

    def _report_loader(self) -> DataLoader:
        """One empty batch: ``validate`` / ``test`` of a discrete search report its incumbent, no images."""
        return DataLoader(_RepeatedBatch({}, 1), batch_size=None, num_workers=0,
                          generator=torch.Generator().manual_seed(0))

    val_dataloader = test_dataloader = _report_loader

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "proxy" in batch:
            x, y = batch["proxy"]
            return {"proxy": (self.augment.normalize(x), y)}
        return batch
