"""When an every-n-epochs analysis callback runs."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl


def every_nth_or_last_epoch(trainer: pl.Trainer, every_n_epochs: Optional[int]) -> bool:
    """Whether the epoch now ending is an n-th one or the run's last (``None``: the last only)."""
    last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return last or (every_n_epochs is not None and (trainer.current_epoch + 1) % every_n_epochs == 0)
