"""The ensemble family: SAEP (``saep``) and its pruning rules (``pruning``)."""

from lightning_nas.methods.ensembles.saep import SAEP

__all__ = ["SAEP"]
