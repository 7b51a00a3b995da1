"""Tabular NAS benchmarks: offline lookups of trained architectures' accuracies."""

from lightning_nas.tabular.nb201 import NB201Benchmark, default_benchmark, load_benchmark
from lightning_nas.tabular.published import PublishedRow, published_nb201

__all__ = ["NB201Benchmark", "PublishedRow", "default_benchmark", "load_benchmark", "published_nb201"]
