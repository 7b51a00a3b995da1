"""Search and training methods, one LightningModule per method family."""

from lightning_nas.methods.base import BilevelSearch
from lightning_nas.methods.cell_training import TrainCell
from lightning_nas.methods.darts import DARTS
from lightning_nas.methods.discrete import AREA, NASWOT, REA, DiscreteSearch, RandomSearch
from lightning_nas.methods.mf_kd import MFKD, BayesOpt
from lightning_nas.methods.milenas import MiLeNAS
from lightning_nas.methods.na_darts import NADARTS
from lightning_nas.methods.retrain import Retrain
from lightning_nas.methods.saep import SAEP
from lightning_nas.methods.sdarts import SDARTS
from lightning_nas.methods.single_path import SinglePathSearch

__all__ = ["AREA", "BayesOpt", "BilevelSearch", "DARTS", "DiscreteSearch", "MFKD", "MiLeNAS", "NADARTS", "NASWOT",
           "REA", "RandomSearch", "Retrain", "SAEP", "SDARTS", "SinglePathSearch", "TrainCell"]
