"""The training family: one network trained (``frame.NetworkTraining``): a genotype with the DARTS protocol
(``retrain.Retrain``), one cell plain or distilled (``cell_training.TrainCell``) and its losses."""

from lightning_nas.methods.training.cell_training import TrainCell
from lightning_nas.methods.training.retrain import Retrain

__all__ = ["Retrain", "TrainCell"]
