"""The bilevel (differentiable) family: one loop (``frame.BilevelSearch``), each paper a thin class on it."""

from lightning_nas.methods.bilevel.beta_darts import BetaDARTS
from lightning_nas.methods.bilevel.darts import DARTS
from lightning_nas.methods.bilevel.darts_pt import DartsPT
from lightning_nas.methods.bilevel.drnas import DrNAS
from lightning_nas.methods.bilevel.frame import BilevelSearch
from lightning_nas.methods.bilevel.gdas import GDAS
from lightning_nas.methods.bilevel.milenas import MiLeNAS
from lightning_nas.methods.bilevel.na_darts import NADARTS
from lightning_nas.methods.bilevel.sdarts import SDARTS
from lightning_nas.methods.bilevel.snas import SNAS

__all__ = ["BetaDARTS", "BilevelSearch", "DARTS", "DartsPT", "DrNAS", "GDAS", "MiLeNAS", "NADARTS", "SDARTS", "SNAS"]
