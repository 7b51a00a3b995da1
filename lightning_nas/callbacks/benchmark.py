"""Anytime benchmark accuracy (the NAS-Bench-201 protocol of Dong & Yang, ICLR 2020, Sec. 5): after every
training epoch, the current genotype's trained accuracy is looked up in the benchmark and logged as
``benchmark/<dataset>_<metric>`` with ``benchmark/arch_index``. On a DARTS search this is where collapse shows:
the derived cell drifts to skip connections and its benchmark accuracy falls (all-skip: 54.30 % on CIFAR-10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_nas.core.module import NASModule, log_replicated
from lightning_nas.errors import ConfigError
from lightning_nas.tabular.nb201 import DATASETS, canonical_dataset, load_benchmark


class BenchmarkAccuracy(Callback):
    def __init__(self, datasets: Sequence[str] = DATASETS, metric: str = "test",
                 benchmark_path: Optional[str] = None):
        """
        Args:
            datasets: benchmark datasets to report (cifar10, cifar100, imagenet16_120; the benchmark's spellings
                such as ImageNet16-120 are accepted).
            metric: ``test`` (shipped table) or ``valid`` (official files only).
            benchmark_path: official NAS-Bench-201 / NATS-Bench files or a CSV; default: the shipped table.
        """
        self.benchmark_path = benchmark_path
        self.benchmark = load_benchmark(benchmark_path)
        self.datasets, self.metric = [canonical_dataset(d) for d in datasets], metric
        for d in self.datasets:
            self.benchmark.column(d, metric)  # a clear error now rather than after the first epoch
        self.history: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        space = pl_module.search_space() if isinstance(pl_module, NASModule) else None
        if space is None or space.benchmark(self.benchmark_path) is None:
            raise ConfigError("the BenchmarkAccuracy callback needs a search on the NAS-Bench-201 space "
                              "(lightning_nas.search_spaces.nb201.NB201Supernet or a discrete NB201 search); "
                              "remove it from trainer.callbacks for this run")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        arch = pl_module.genotype()
        row = self.benchmark.query(arch)
        record = {"epoch": trainer.current_epoch, "index": row["index"], "arch": row["arch"]}
        log_replicated(pl_module, "benchmark/arch_index", float(row["index"]))
        for d in self.datasets:
            key = f"{d}_{self.metric}"
            record[key] = row[key]
            log_replicated(pl_module, f"benchmark/{key}", row[key])
        self.history.append(record)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
