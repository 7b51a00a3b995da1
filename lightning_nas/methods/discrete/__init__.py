"""The discrete family: one evaluation per step over any registered space (``frame.DiscreteSearch``), ask/tell
strategies (``strategies``, ``bayes_opt.GPUCB``, ``mf_kd.MultiFidelityUCB``), the searches of the papers, and
MF-KD's low-fidelity training."""

from lightning_nas.methods.discrete.bayes_opt import GPUCB, BayesOpt
from lightning_nas.methods.discrete.frame import DiscreteSearch, score_cell
from lightning_nas.methods.discrete.mf_kd import MFKD, MultiFidelityUCB
from lightning_nas.methods.discrete.searches import AREA, NASWOT, REA, RandomSearch
from lightning_nas.methods.discrete.strategies import RandomSampling, RegularizedEvolution

__all__ = ["AREA", "BayesOpt", "DiscreteSearch", "GPUCB", "MFKD", "MultiFidelityUCB", "NASWOT", "REA",
           "RandomSampling", "RandomSearch", "RegularizedEvolution", "score_cell"]
