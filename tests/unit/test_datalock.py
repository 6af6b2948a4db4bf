"""One data dir, one stack: the data dir's lock (real files and flock, no stack)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from progrock.local.datalock import LOCK_NAME, DataDirInUse, DataDirLock

HOLD = (
    "import sys, time\n"
    "from progrock.local.datalock import DataDirLock\n"
    "DataDirLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_second_lock_is_refused_naming_the_holder_and_the_option(tmp_path: Path) -> None:
    """While one holder has it, another gets DataDirInUse naming the data dir, the
    holder's pid and --data-dir; once released, it can take it."""
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirInUse) as info:
        second.acquire()
    message = str(info.value)
    assert f"the data dir {tmp_path} is in use" in message
    assert f"(pid {os.getpid()})" in message and "--data-dir" in message
    first.release()
    second.acquire()
    assert second.held and not first.held
    second.release()


def test_a_stale_lock_file_blocks_nothing(tmp_path: Path) -> None:
    """A lock file a crashed stack left behind, its pid still in it, is taken over."""
    (tmp_path / LOCK_NAME).write_text("999999\n")
    lock = DataDirLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_holder_killed_with_sigkill_frees_the_data_dir(tmp_path: Path) -> None:
    """A live holder in another process is named by its pid; SIGKILLed, it holds nothing."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DataDirInUse, match=rf"\(pid {holder.pid}\)"):
            DataDirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    lock = DataDirLock(tmp_path)
    lock.acquire()
    lock.release()


def test_children_of_the_holder_do_not_keep_the_lock(tmp_path: Path) -> None:
    """A child started while the lock is held does not inherit it: once the holder lets
    go, the data dir is free although the child still runs."""
    lock = DataDirLock(tmp_path)
    lock.acquire()
    # close_fds=False: only close-on-exec keeps the lock's descriptor from the child.
    # (Linux drops a flock on exec a moment after the parent resumes: wait until
    # the child runs.)
    sleeper = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", sleeper], close_fds=False, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        lock.release()
        again = DataDirLock(tmp_path)
        again.acquire()
        again.release()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
