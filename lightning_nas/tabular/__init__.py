"""Tabular NAS benchmarks: offline lookups of trained architectures' accuracies."""

from lightning_nas.tabular.nb201 import NB201Benchmark, default_benchmark, load_benchmark

__all__ = ["NB201Benchmark", "default_benchmark", "load_benchmark"]
