"""One data dir, one stack: the lock a running ``progrock up`` holds on its data dir.

Two stacks on one data dir would share its SQLite database and backend task
file but not its Redis: each one's sweep would fail the other's tasks. A
stack therefore takes an exclusive ``flock`` on ``progrock.lock`` in its data
dir before it starts anything, and writes its pid there; a second one finds
the lock taken and stops at once, naming the first one's pid.

The kernel drops a ``flock`` when its holder dies however it dies, so a lock
file left behind by a crash (even a SIGKILL) blocks nothing: only a live
holder counts, never the file's existence or the pid written in it. (Linux
releases a dead process's files a moment after it is reaped, so a lock found
taken is tried again for up to :data:`PATIENCE` seconds.) The children of a
stack do not inherit the lock (the descriptor is close-on-exec).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from progrock.exceptions import ProgRockError

__all__ = ["LOCK_NAME", "DataDirInUse", "DataDirLock"]

LOCK_NAME = "progrock.lock"
#: Seconds a lock found taken is tried again before its holder counts as alive.
PATIENCE = 1.0


class DataDirInUse(ProgRockError):
    """Another live process holds the data dir's lock."""


class DataDirLock:
    """The exclusive lock on ``DATA_DIR/progrock.lock`` (:meth:`acquire`, :meth:`release`)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirInUse` naming the holder's pid."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _flock_within(fd, PATIENCE)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "a process that has not written its pid yet"
            raise DataDirInUse(
                f"the data dir {self.data_dir} is in use by another ProgRock stack ({who}); "
                "stop that one, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (the file stays: deleting it would race with the next holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock


def _flock_within(fd: int, patience: float) -> None:
    """Take the flock, trying again for ``patience`` seconds; else raise BlockingIOError."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
