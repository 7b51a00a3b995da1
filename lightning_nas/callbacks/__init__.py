"""Callbacks: run artifacts and analysis tools, each attachable to any method from the config."""

from lightning_nas.callbacks.benchmark import BenchmarkAccuracy
from lightning_nas.callbacks.disturbance import DisturbanceProbe
from lightning_nas.callbacks.gradient_variance import GradientVariance
from lightning_nas.callbacks.landscape import HessianEigenvalue
from lightning_nas.callbacks.loss_slice import LossLandscapeSlice
from lightning_nas.callbacks.run_artifacts import RunArtifacts
from lightning_nas.callbacks.step_time import StepTime
from lightning_nas.callbacks.ws_variance import WeightSharingVariance

__all__ = ["BenchmarkAccuracy", "DisturbanceProbe", "GradientVariance", "HessianEigenvalue", "LossLandscapeSlice",
           "RunArtifacts", "StepTime", "WeightSharingVariance"]
