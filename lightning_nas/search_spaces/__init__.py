"""Search spaces: pure ``nn.Module`` supernets and, behind one ``SearchSpace`` interface, everything else that is
specific to a space (``get_space("nb201")``, ``get_space("darts")``)."""

from lightning_nas.search_spaces.space import CellGraph, Path, SearchSpace, get_space, register_space, space_names

__all__ = ["CellGraph", "Path", "SearchSpace", "get_space", "register_space", "space_names"]
