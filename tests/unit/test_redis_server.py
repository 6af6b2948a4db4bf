"""progrock.local.redis_server: the private Redis server's command line and URL."""

from __future__ import annotations

from pathlib import Path

from progrock.local.redis_server import RedisServer


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_by_default_it_listens_on_loopback_in_protected_mode(tmp_path: Path) -> None:
    """No host given: 127.0.0.1, protected mode on, a URL on 127.0.0.1."""
    server = RedisServer(6399, tmp_path)
    command = server.command()
    assert option(command, "--bind") == "127.0.0.1"
    assert option(command, "--protected-mode") == "yes"
    assert server.url == "redis://127.0.0.1:6399/0"


def test_it_listens_on_the_address_it_is_given(tmp_path: Path) -> None:
    """A private network's address (the several-hosts test's data host): bound there,
    reachable from the network (protected mode would refuse it), and in the URL."""
    server = RedisServer(6379, tmp_path, host="10.77.0.2")
    command = server.command()
    assert option(command, "--bind") == "10.77.0.2"
    assert option(command, "--protected-mode") == "no"
    assert server.url == "redis://10.77.0.2:6379/0"
