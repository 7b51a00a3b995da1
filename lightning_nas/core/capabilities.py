"""What only some methods can do, declared as small capability types (checked with ``isinstance``).

What every method provides (``genotype``, ``search_space``, ``summary_extras``, ``num_parameters``,
``eval_logits``, the analysis hooks) is declared on ``core.module.NASModule``. A callback or a report that needs
more asks for one of these types and refuses a method without it before training, with the fix in the message;
nothing probes a method with ``hasattr``.

- ``TrainsArchitecture``: a search that trains continuous architecture parameters of a supernet (alpha); its
  mixing weights are recorded with every genotype.
- ``SamplesChildren``: a method whose supernet has the single-path sampling mode; ``supernet_for`` / ``group_of``
  name the weights a child uses (one copy unless the method shares weights by groups).
- ``UpdatesChildren``: a method that can take one weight step of a given child outside the training loop, with
  its own update rule (the disturbance probe's sandbox).
- ``AskTell``: the strategy of a discrete search: it proposes cells (``ask``) and learns their fitness
  (``tell``), and its state goes into the checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from lightning_nas.search_spaces.base import Supernet
from lightning_nas.search_spaces.space import Path


class TrainsArchitecture(ABC):
    """A search that trains the architecture parameters of ``supernet`` (DARTS and its family)."""

    supernet: Supernet

    def architecture_weights(self) -> dict[str, torch.Tensor]:
        """The current continuous relaxation: per cell type, edges x ``supernet.primitives`` mixing weights."""
        return self.supernet.mixing_weights()


class SamplesChildren(ABC):
    """A method with a supernet that runs single-path children (``supernet(x, path=...)``)."""

    supernet: Supernet

    def supernet_for(self, path: Path) -> Supernet:
        """The supernet whose weights the child ``path`` trains and is evaluated with."""
        return self.supernet

    def group_of(self, path: Path) -> int:
        """The weight group of the child (0: every child shares one copy)."""
        return 0


class UpdatesChildren(SamplesChildren):
    """A single-path method that can train one given child for one step outside the loop."""

    @abstractmethod
    def child_update(self, path: Path, x: torch.Tensor, y: torch.Tensor) -> float:
        """One weight step of the child with the method's update rule, no logging, no DDP reduction; returns
        the loss. The caller saves and restores the state around it."""


class AskTell(ABC):
    """A discrete search strategy over the cells of a ``SearchSpace``: pure, no Lightning, every draw from the
    generator it is given (a seeded caller reproduces a search exactly)."""

    @abstractmethod
    def ask(self, g: torch.Generator) -> Any:
        """The next cell to evaluate."""

    @abstractmethod
    def tell(self, arch: Any, fitness: float) -> None:
        """The fitness of an evaluated cell."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (stateless strategies keep nothing)
        """Restore ``state_dict()``'s state (resume)."""
