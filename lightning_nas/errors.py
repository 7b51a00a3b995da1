"""Errors the CLI reports as one clear line (what is wrong and how to fix it) instead of a traceback."""


class LightningNASError(Exception):
    """Base class: every subclass message names the problem and the fix."""

    prefix = "error"  # how the CLI starts the message
    exit_code = 2  # what the CLI exits with


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


class Interrupted(LightningNASError):
    """A run stopped by a signal after saving its state; ``exit_code`` is 128 + the signal number."""

    prefix = "stopped"

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


class LostProcess(LightningNASError):
    """Another process of a multi-process (DDP) run ended: this one cannot go on alone."""


class OutputError(LightningNASError):
    """An output (a report, a run directory, a checkpoint) cannot be written where it was asked to go."""


class NothingToDo(LightningNASError):
    """The command has nothing left to do (a finished run resumed, a requeued job): said in one line, exit code 0,
    nothing written."""

    prefix = "lightning_nas"
    exit_code = 0
