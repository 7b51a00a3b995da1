"""The DARTS CNN search space."""

from lightning_nas.search_spaces.cost import count_parameters
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet
from lightning_nas.search_spaces.darts.genotype import Genotype, derive_genotype
from lightning_nas.search_spaces.darts.ops import OPS, PRIMITIVES
from lightning_nas.search_spaces.darts.published import PUBLISHED
from lightning_nas.search_spaces.darts.resolve import load_genotype
from lightning_nas.search_spaces.darts.space import DartsSpace
from lightning_nas.search_spaces.darts.supernet import DartsSupernet

__all__ = ["DartsSpace", "DartsSupernet", "Genotype", "NetworkCIFAR", "NetworkImageNet", "OPS", "PRIMITIVES",
           "PUBLISHED", "count_parameters", "derive_genotype", "load_genotype"]
