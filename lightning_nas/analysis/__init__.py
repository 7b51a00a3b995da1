"""Analyses over runs: ranking-stability metrics of weight sharing."""
