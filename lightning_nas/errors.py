"""Errors the CLI reports as one clear line (what is wrong and how to fix it) instead of a traceback."""


class LightningNASError(Exception):
    """Base class: every subclass message names the problem and the fix."""


class ConfigError(LightningNASError, ValueError):
    """A configuration value is invalid."""


class DataError(LightningNASError):
    """A dataset is missing, corrupt or unreadable."""


class GenotypeError(LightningNASError, ValueError):
    """A genotype is malformed or names an unknown operation."""


class CheckpointError(LightningNASError):
    """A checkpoint does not belong to this method or search space."""


class DivergedError(LightningNASError):
    """Training produced NaN or Inf weights or architecture parameters."""
