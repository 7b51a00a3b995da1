"""What a search space's supernet offers the differentiable methods (a pure ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from torch import nn

from lightning_nas.errors import ConfigError


def check_primitives(primitives: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """A space's op set from a config: distinct names of ``known``, at least two."""
    primitives = tuple(primitives)
    unknown = [p for p in primitives if p not in known]
    if unknown or len(set(primitives)) != len(primitives) or len(primitives) < 2:
        raise ConfigError(f"primitives must be distinct names from {list(known)}, at least two; "
                          f"got {list(primitives)}")
    return primitives


class Supernet(nn.Module):
    """Base of the supernets: the methods use only this interface, so each runs on every space.

    Subclasses set ``primitives`` and ``ARCH_NAMES`` and implement ``mixing_weights``, ``forward`` and
    ``genotype``; ``genotype()`` returns an object with ``to_dict()`` and ``to_text()``.
    """

    ARCH_NAMES: tuple[str, ...] = ()
    primitives: Sequence[str]

    def space_id(self) -> str:
        """Identifies the space in checkpoints (a checkpoint of another space is refused)."""
        raise NotImplementedError

    def arch_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in self.ARCH_NAMES]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if name not in self.ARCH_NAMES:
                yield name, p

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """The continuous relaxation: softmax(alpha) per edge, one tensor per alpha."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mixing: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        raise NotImplementedError

    def genotype(self) -> Any:
        raise NotImplementedError
