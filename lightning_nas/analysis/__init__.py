"""Analyses: ranking-stability metrics of weight sharing (``ws_variance``), loss-landscape slices and gradient
variance (``landscape``)."""
