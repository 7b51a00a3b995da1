"""Shared fixtures: tiny supernets, offline wandb, and the repository's shared data."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: one torch thread per worker and per process it starts (DDP ranks, the quickstart);
    # default threads would oversubscribe the cores and slow everything down
    import torch

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
# decoded datasets are cached here, never next to ../shared/data
os.environ.setdefault("LIGHTNING_NAS_CACHE", str(REPO / ".pytest_cache" / "lnas-data"))
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR_JPG = SHARED_DATA / "cifar10-jpg.tar.gz"


@pytest.fixture
def tiny_supernet_factory():
    from lightning_nas.search_spaces.darts import DartsSupernet

    return partial(DartsSupernet, channels=4, layers=3, alpha_init_std=1.0)


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


class RunsCode:
    """A pickle payload that creates ``marker`` when unpickled by plain pickle: a data file that would run code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))
