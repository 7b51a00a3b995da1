"""The single-path family: uniform single-path supernet training and ranking (``frame.SinglePathSearch``: RSPS /
SPOS, group and prefix sharing), NA-RS and DI-NAS as thin classes on it, and DI-NAS's projectors."""

from lightning_nas.methods.single_path.di_nas import DINAS
from lightning_nas.methods.single_path.frame import SinglePathSearch, path_code
from lightning_nas.methods.single_path.na_rs import NARS
from lightning_nas.methods.single_path.projection import GradientProjector, GradientSpaceProjector, OWMProjector

__all__ = ["DINAS", "GradientProjector", "GradientSpaceProjector", "NARS", "OWMProjector", "SinglePathSearch",
           "path_code"]
