"""Network namespaces for the several-hosts test: one per host, joined by a bridge.

:class:`Network` makes a namespace holding a bridge (the switch) and, per
host, a namespace of its own linked to the switch by a veth pair: ``eth0``
inside the host, the host's label on the switch side. Every name carries
this process's pid; nothing is created in, or added to, the root namespace
(every ``ip`` command names the namespace it acts in), and :meth:`Network.close`
deletes every namespace it made.

Code runs inside a host through :meth:`Namespace.call`: a thread of this
process that joined the namespace (``setns(2)`` moves only the calling
thread), so the sockets it opens, the threads it starts and the processes it
spawns are in that namespace: the same commands as anywhere else, no
``ip netns exec`` wrapper.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # <sched.h>
_NETNS_DIR = "/run/netns"  # where `ip netns add` puts them


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (the reason is the message)."""


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its error output if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def why_unavailable() -> str | None:
    """Why this machine cannot run the test (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add, veth pairs, a bridge)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


def _enter(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(_NETNS_DIR, name), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Namespace:
    """A network namespace of our own, and a thread of this process inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        ip("netns", "add", name)
        self._thread: ThreadPoolExecutor | None = None
        try:
            ip("-n", name, "link", "set", "lo", "up")
            self._thread = ThreadPoolExecutor(
                1, thread_name_prefix=f"netns-{name}", initializer=_enter, initargs=(name,)
            )
            self.call(lambda: None)  # fails here if the thread could not join
        except BaseException:
            self.close()
            raise

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run inside the namespace; its result."""
        if self._thread is None:
            raise RuntimeError(f"namespace {self.name} is closed")
        return self._thread.submit(fn, *args, **kwargs).result()

    def ip(self, *args: str) -> None:
        ip("-n", self.name, *args)

    def close(self) -> None:
        """Stop the thread and delete the namespace (its interfaces go with it)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


class Network:
    """A switch (a bridge in a namespace of its own) and hosts plugged into it."""

    def __init__(self, subnet: str = "10.77.0", prefix: str | None = None) -> None:
        self.subnet = subnet
        self.prefix = prefix or f"progrock-{os.getpid()}"
        self.hosts: dict[str, Namespace] = {}
        self.addresses: dict[str, str] = {}
        self.switch = Namespace(f"{self.prefix}-switch")
        try:
            self.switch.ip("link", "add", "name", "br0", "type", "bridge")
            self.switch.ip("link", "set", "dev", "br0", "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, label: str, last_octet: int) -> Namespace:
        """A host ``label`` at ``SUBNET.last_octet/24``, plugged into the switch."""
        if len(label) > 15:
            raise ValueError(f"a host label must fit an interface name (15), got {label!r}")
        host = Namespace(f"{self.prefix}-{label}")
        self.hosts[label] = host
        address = f"{self.subnet}.{last_octet}"
        # "name" and "dev" spelled out: a label such as "a" would read as a keyword.
        self.switch.ip("link", "add", "name", label, "type", "veth", "peer", "name", "eth0")
        self.switch.ip("link", "set", "dev", "eth0", "netns", host.name)
        self.switch.ip("link", "set", "dev", label, "master", "br0", "up")
        host.ip("addr", "add", f"{address}/24", "dev", "eth0")
        host.ip("link", "set", "eth0", "up")
        self.addresses[label] = address
        return host

    def cut(self, label: str) -> None:
        """Unplug a host: its switch port goes down, its packets go nowhere."""
        self.switch.ip("link", "set", "dev", label, "down")

    def close(self) -> None:
        """Delete every namespace made (hosts first, the switch last)."""
        for host in self.hosts.values():
            host.close()
        self.hosts.clear()
        self.switch.close()
