"""Search and training methods, one folder per family (each a frame and the thin classes of the papers on it,
with the components only that family uses): ``bilevel``, ``single_path``, ``discrete``, ``ensembles``,
``training``. Every method a paper names is exported here; configs name it as ``lightning_nas.methods.<Class>``.

Modules that moved when the families got their folders still import under their old names (``_MOVED``), so
configs and checkpoints written before keep working: ``lightning_nas.methods.projection.OWMProjector`` is
``lightning_nas.methods.single_path.projection.OWMProjector``.
"""

import importlib
import sys

from lightning_nas.methods.bilevel import (
    DARTS,
    GDAS,
    NADARTS,
    SDARTS,
    SNAS,
    BetaDARTS,
    BilevelSearch,
    DartsPT,
    DrNAS,
    MiLeNAS,
)
from lightning_nas.methods.discrete import AREA, MFKD, NASWOT, REA, BayesOpt, DiscreteSearch, RandomSearch
from lightning_nas.methods.ensembles import SAEP
from lightning_nas.methods.single_path import DINAS, NARS, SinglePathSearch
from lightning_nas.methods.training import Retrain, TrainCell

__all__ = ["AREA", "BayesOpt", "BetaDARTS", "BilevelSearch", "DARTS", "DartsPT", "DINAS", "DiscreteSearch", "DrNAS",
           "GDAS", "MFKD", "MiLeNAS", "NADARTS", "NARS", "NASWOT", "REA", "RandomSearch", "Retrain", "SAEP",
           "SDARTS", "SNAS", "SinglePathSearch", "TrainCell"]

#: old module -> where it lives now (the family folders); ``lightning_nas.methods.<old>`` imports the new module
#: (``mf_kd`` held BayesOpt and MFKD, now in two files: it maps to the family's package, which exports both)
_MOVED = {
    "base": "bilevel.frame", "darts": "bilevel.darts", "milenas": "bilevel.milenas", "sdarts": "bilevel.sdarts",
    "na_darts": "bilevel.na_darts", "projection": "single_path.projection", "evolution": "discrete.strategies",
    "bayes_opt": "discrete.bayes_opt", "mf_kd": "discrete", "low_fidelity": "discrete.low_fidelity",
    "saep": "ensembles.saep", "ensemble_pruning": "ensembles.pruning", "network_training": "training.frame",
    "retrain": "training.retrain", "cell_training": "training.cell_training",
    "distill_losses": "training.distill_losses",
}
for _old, _new in _MOVED.items():
    sys.modules.setdefault(f"{__name__}.{_old}", importlib.import_module(f"{__name__}.{_new}"))
