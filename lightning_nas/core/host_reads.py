"""Declared host reads: the few places where a method's algorithm needs a device value on the host inside a step.

A step of a search should never wait for the device (see ``lightning_nas.callbacks.host_sync``). A few methods
cannot do without it by design: GDAS runs only the op its Gumbel draw picked on each edge, so the host must know
the pick (the official code reads every edge's pick with ``.item()``). Such a read is wrapped in
``host_read("why")``; ``HostSyncCounter`` records it as declared, not as a defect, and the method's docstring says
how many it takes per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

_reasons: list[str] = []


@contextmanager
def host_read(reason: str) -> Iterator[None]:
    """Marks the reads of device values inside the block as what the algorithm needs (``reason`` says why)."""
    _reasons.append(reason)
    try:
        yield
    finally:
        _reasons.pop()


def declared_reason() -> Optional[str]:
    """The innermost ``host_read`` reason in force, or None."""
    return _reasons[-1] if _reasons else None
