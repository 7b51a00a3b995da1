"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020)."""

from lightning_nas.search_spaces.cost import count_parameters
from lightning_nas.search_spaces.nb201.arch import EDGES, NB201Arch, load_arch
from lightning_nas.search_spaces.nb201.network import NB201Network
from lightning_nas.search_spaces.nb201.ops import PRIMITIVES
from lightning_nas.search_spaces.nb201.space import NB201Space
from lightning_nas.search_spaces.nb201.supernet import NB201Supernet

__all__ = ["EDGES", "NB201Arch", "NB201Network", "NB201Space", "NB201Supernet", "PRIMITIVES", "count_parameters",
           "load_arch"]
