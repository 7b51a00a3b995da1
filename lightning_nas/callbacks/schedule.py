"""Epoch numbers as outputs show them, and when an every-n-epochs analysis callback runs."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl

#: summary.json's ``epoch_numbering`` of runs whose outputs number epochs from 1 (earlier runs lack it: from 0)
EPOCH_NUMBERING = "from 1"


def epoch_number(trainer: pl.Trainer) -> int:
    """The epoch as every output a person reads numbers it: from 1 (the first epoch is epoch 1, and a file or record
    written at an epoch's end carries that epoch's number). Lightning's ``current_epoch`` counts from 0."""
    return trainer.current_epoch + 1


def every_nth_or_last_epoch(trainer: pl.Trainer, every_n_epochs: Optional[int]) -> bool:
    """Whether the epoch now ending is an n-th one or the run's last (``None``: the last only)."""
    last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return last or (every_n_epochs is not None and (trainer.current_epoch + 1) % every_n_epochs == 0)
