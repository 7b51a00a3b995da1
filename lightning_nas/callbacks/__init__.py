"""Callbacks: run artifacts now; analysis callbacks (landscape, weight-sharing variance) attach the same way."""

from lightning_nas.callbacks.run_artifacts import RunArtifacts

__all__ = ["RunArtifacts"]
