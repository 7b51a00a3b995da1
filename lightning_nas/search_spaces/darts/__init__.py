"""The DARTS CNN search space."""

from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet, count_parameters
from lightning_nas.search_spaces.darts.genotype import Genotype, derive_genotype
from lightning_nas.search_spaces.darts.ops import OPS, PRIMITIVES
from lightning_nas.search_spaces.darts.published import PUBLISHED
from lightning_nas.search_spaces.darts.resolve import load_genotype
from lightning_nas.search_spaces.darts.supernet import DartsSupernet

__all__ = ["DartsSupernet", "Genotype", "NetworkCIFAR", "NetworkImageNet", "OPS", "PRIMITIVES", "PUBLISHED",
           "count_parameters", "derive_genotype", "load_genotype"]
