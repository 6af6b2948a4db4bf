"""tests/hosts/netns.py: namespaces made, linked, cut and always deleted; a loud skip reason."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.hosts import netns
from tests.hosts.netns import Network, why_unavailable

pytestmark = pytest.mark.hosts


def test_without_root_or_ip_the_reason_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: 'needs root'; root without ip: 'needs the ip command'; else None."""
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "needs root" in (why_unavailable() or "")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert "needs the ip command" in (why_unavailable() or "")
    monkeypatch.setattr(netns.shutil, "which", lambda name: "/usr/sbin/ip")
    assert why_unavailable() is None


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def root_addresses() -> set[str]:
    """The root namespace's addresses in 10.77.0.0/24 (the test's subnet)."""
    listed = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    return {line for line in listed.stdout.splitlines() if " 10.77.0." in line}


def reaches(host: netns.Namespace, address: str, port: int) -> bool:
    def connect() -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    return host.call(connect)


def test_hosts_reach_each_other_until_cut_and_every_namespace_goes() -> None:
    """Two hosts on the switch connect to each other; cut, they do not; closed, the
    switch's and the hosts' namespaces are gone and the root namespace never saw them."""
    reason = why_unavailable()
    if reason:
        pytest.skip(f"network namespaces not tested: {reason}")
    before = namespaces()
    addresses_before = root_addresses()
    network = Network(subnet="10.77.0")
    try:
        server = network.add_host("a", 1)
        client = network.add_host("b", 2)
        listener = server.call(socket.create_server, ("10.77.0.1", 0))
        port = listener.getsockname()[1]
        try:
            made = namespaces() - before
            assert made == {f"{network.prefix}-{n}" for n in ("switch", "a", "b")}
            assert reaches(client, "10.77.0.1", port)
            assert root_addresses() == addresses_before  # nothing added out here
            network.cut("b")
            assert not reaches(client, "10.77.0.1", port)
        finally:
            listener.close()
    finally:
        network.close()
    assert namespaces() == before
