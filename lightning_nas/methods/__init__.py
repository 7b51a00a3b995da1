"""Search and training methods, one LightningModule per method family."""

from lightning_nas.methods.base import BilevelSearch
from lightning_nas.methods.darts import DARTS
from lightning_nas.methods.milenas import MiLeNAS
from lightning_nas.methods.na_darts import NADARTS
from lightning_nas.methods.retrain import Retrain
from lightning_nas.methods.sdarts import SDARTS

__all__ = ["BilevelSearch", "DARTS", "MiLeNAS", "NADARTS", "Retrain", "SDARTS"]
