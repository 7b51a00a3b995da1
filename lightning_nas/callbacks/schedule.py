"""When an every-n-epochs analysis callback runs."""

from __future__ import annotations

import pytorch_lightning as pl


def every_nth_or_last_epoch(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Whether the epoch now ending is an n-th one or the run's last."""
    last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return (trainer.current_epoch + 1) % every_n_epochs == 0 or last
