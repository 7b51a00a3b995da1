"""Comparison reports over run directories: ``python -m lightning_nas report RUN_DIR...``."""
