"""One writer per run directory: a lock file that a dead process does not keep.

``fit`` takes ``<run>/.lock`` (created atomically with ``O_EXCL``, holding the owner's host, pid and process start
time) before it writes anything, and gives it back when it ends. A second process that wants the same run (the same
``run.version`` started twice, a resume while the first still writes, a protocol submitted twice) is refused with
the owner's name. A lock whose owner is gone (killed with ``kill -9``, the node rebooted) is taken over when the
owner ran on this host and its pid is dead or now another process (compared by start time); a lock from another
host cannot be checked, so the message says how to remove it by hand.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from lightning_nas.errors import LightningNASError

LOCK_NAME = ".lock"
#: an unreadable lock younger than this is being written by its owner right now
FRESH_SECONDS = 10.0


class RunLocked(LightningNASError):
    """Another live process writes this run directory."""


def _process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime (after the command name in parentheses)


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner still runs (always True for another host's: it cannot be checked from here)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = owner.get("start")
    return started is None or _process_start(pid) in (None, started)


class RunLock:
    """The lock of one run directory, held by this process between ``acquire`` and ``release``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> Optional[dict[str, Any]]:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def live_owner(self) -> Optional[dict[str, Any]]:
        """The owner of the lock when it is held by a live process (or another host's), else None."""
        owner = self._owner()
        return owner if owner is not None and _alive(owner) else None

    def acquire(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        continue  # released meanwhile
                    if age < FRESH_SECONDS:
                        raise RunLocked(f"the run directory {self.path.parent} is being opened by another process "
                                        "right now: wait for it, or choose another run.version") from None
                elif _alive(owner):
                    raise RunLocked(
                        f"the run directory {self.path.parent} is being written by process {owner.get('pid')} on "
                        f"{owner.get('host')} (since {owner.get('since')}): wait for it to end (or stop it) before "
                        f"starting or resuming this run; if that process is gone, delete {self.path}") from None
                with contextlib.suppress(FileNotFoundError):  # stale: its owner is dead
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return
        raise RunLocked(f"could not take the lock of {self.path.parent}: other processes keep taking it; start one "
                        "run at a time")

    def release(self) -> None:
        """Give the lock back (only this process's own)."""
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
