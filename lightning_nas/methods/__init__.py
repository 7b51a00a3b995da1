"""Search and training methods, one LightningModule per method family."""

from lightning_nas.methods.base import BilevelSearch
from lightning_nas.methods.darts import DARTS
from lightning_nas.methods.retrain import Retrain

__all__ = ["BilevelSearch", "DARTS", "Retrain"]
