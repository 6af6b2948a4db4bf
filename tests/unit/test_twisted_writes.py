"""progrock.contrib.twisted_writes on a real Twisted reactor and real sockets (in a subprocess:
the patch is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import pytest

pytest.importorskip("twisted")

SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, threading
    if sys.argv[2] == "asyncio":  # what Daphne runs on
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
    from twisted.internet import reactor, protocol
    from zope.interface import implementer
    from twisted.internet.interfaces import IPullProducer, IPushProducer
    if sys.argv[1] == "install":
        from progrock.contrib import twisted_writes
        assert twisted_writes.install() and twisted_writes.install()  # idempotent
    BIG = bytes(range(256)) * 40_000  # 10 MB: more than a socket takes at once
    CHUNKS = 50
    seen = {}

    @implementer(IPullProducer)
    class Pull:
        def __init__(self, transport):
            self.transport, self.sent = transport, 0
        def resumeProducing(self):
            self.transport.write(b"%04d" % self.sent)
            self.sent += 1
            if self.sent == CHUNKS:
                self.transport.unregisterProducer()
                self.transport.loseConnection()
        def stopProducing(self):
            pass

    @implementer(IPushProducer)
    class Push:
        def __init__(self):
            self.pauses = self.resumes = 0
        def pauseProducing(self):
            self.pauses += 1
        def resumeProducing(self):
            self.resumes += 1
        def stopProducing(self):
            pass

    class Server(protocol.Protocol):
        def connectionMade(self):
            t = self.transport
            if self.factory.mode == "push":
                push = Push()
                t.registerProducer(push, True)  # as Twisted's HTTP channel does
                t.write(b"b" * 100)
                seen["push_small"] = (push.pauses, t in reactor.getWriters())
                t.write(BIG)  # fills the buffer past its size: the producer is paused
                seen["push_paused"] = push.pauses
                def drained():
                    seen["push_resumed"] = push.resumes
                    t.unregisterProducer()
                    t.loseConnection()
                self.factory.drained = drained
                self.check = reactor.callLater(0.01, self.poll_drained)
                return
            if self.factory.mode == "abort":
                t.write(b"before")
                t.abortConnection()
                t.write(b"after")  # dropped, as Twisted documents
                return
            if self.factory.mode == "writes":
                t.write(b"a" * 100)
                seen["small_waits_for_reactor"] = t in reactor.getWriters()
                t.write(BIG)
                seen["big_waits_for_reactor"] = t in reactor.getWriters()
                t.write(b"tail")  # queued behind what BIG left over
                t.loseConnection()
            else:
                t.registerProducer(Pull(t), False)

        def poll_drained(self):
            if self.transport in reactor.getWriters():
                self.check = reactor.callLater(0.01, self.poll_drained)
            else:
                self.factory.drained()

    def serve(mode):
        f = protocol.Factory()
        f.protocol, f.mode = Server, mode
        return reactor.listenTCP(0, f, interface="127.0.0.1").getHost().port

    def read_all(port, key):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
        except ConnectionResetError:  # the abort, before connect() returned (a loaded machine)
            seen[key] = b""
            return
        parts = []
        while True:
            try:
                b = s.recv(1 << 16)
            except ConnectionResetError:  # the abort
                break
            if not b:
                break
            parts.append(b)
        s.close()
        seen[key] = b"".join(parts)

    def client():
        try:
            read_all(serve_ports[0], "writes")
            read_all(serve_ports[1], "pull")
            read_all(serve_ports[2], "push")
            read_all(serve_ports[3], "abort")
        finally:
            reactor.callFromThread(reactor.stop)

    serve_ports = [serve("writes"), serve("pull"), serve("push"), serve("abort")]
    threading.Thread(target=client, daemon=True).start()
    reactor.run()
    print(json.dumps({
        "small_waits_for_reactor": seen["small_waits_for_reactor"],
        "big_waits_for_reactor": seen["big_waits_for_reactor"],
        "writes_in_order": seen["writes"] == b"a" * 100 + BIG + b"tail",
        "pull": seen["pull"].decode(),
        "pull_expected": "".join("%04d" % i for i in range(CHUNKS)),
        "push_small": seen["push_small"],
        "push_paused": seen["push_paused"],
        "push_resumed": seen["push_resumed"],
        "push_in_order": seen["push"] == b"b" * 100 + BIG,
        "abort_after_dropped": b"after" not in seen["abort"],
    }))
    """
)


def run(mode: str, reactor: str = "asyncio") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, reactor], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("reactor", ["asyncio", "default"])
def test_a_write_goes_out_at_once_and_the_rest_keeps_its_order(reactor: str) -> None:
    """Installed: a write goes out at once, the rest is buffered in order, producers behave."""
    got = run("install", reactor)
    assert got["small_waits_for_reactor"] is False  # sent at once: no epoll round
    assert got["big_waits_for_reactor"] is True  # what the socket did not take is buffered
    assert got["writes_in_order"] is True
    assert got["pull"] == got["pull_expected"]  # a pull producer is still asked for more
    # A streaming producer: not paused by a write that went out, paused once the
    # buffer filled, resumed once it drained; everything arrives in order.
    assert got["push_small"] == [0, False]
    assert got["push_paused"] == 1 and got["push_resumed"] == 1
    assert got["push_in_order"] is True
    assert got["abort_after_dropped"] is True


def test_without_it_twisted_waits_for_the_reactor() -> None:
    """The same script without install(): the first check is what the patch changes."""
    got = run("plain")
    assert got["small_waits_for_reactor"] is True
    assert got["writes_in_order"] is True and got["pull"] == got["pull_expected"]
    assert got["push_paused"] == 1 and got["push_in_order"] is True


# The guard, in this process: each test puts Twisted's own tcp.Server.write back.


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    """twisted.internet.tcp.Server, restored after the test, with the guard's warning unsaid."""
    from twisted.internet import tcp

    from progrock.contrib import twisted_writes

    monkeypatch.setattr(tcp.Server, "write", tcp.Server.write)  # undone: Twisted's own again
    monkeypatch.setattr(tcp.Server, twisted_writes._MARK, False, raising=False)
    monkeypatch.setattr(twisted_writes.GUARD, "warned", False)
    return tcp.Server


def test_it_installs_on_the_tested_twisted_and_twice_is_once(server: Any) -> None:
    """On the Twisted of constraints.txt it replaces write; a second install changes nothing."""
    from progrock.contrib import twisted_writes

    twisteds = server.write
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a word on the tested version
        assert twisted_writes.install() is True
        patched = server.write
        assert twisted_writes.install() is True
    assert patched is not twisteds
    assert server.write is patched  # not wrapped a second time


@pytest.mark.parametrize("version", ["27.1.0", "26.4.0", "26.10.0rc1"])
def test_an_untested_twisted_is_left_alone_with_one_warning(
    server: Any, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """Outside the tested range: install() is False, warns once, and write stays Twisted's."""
    import twisted

    from progrock.contrib import twisted_writes

    monkeypatch.setattr(twisted, "__version__", version)
    twisteds = server.write
    with pytest.warns(RuntimeWarning) as caught:
        assert twisted_writes.install() is False
        assert twisted_writes.install() is False
    assert len(caught) == 1
    text = str(caught[0].message)
    assert f"Twisted {version!r}" in text and ">=26.10.0, <27" in text
    assert server.write is twisteds
    assert not getattr(server, twisted_writes._MARK)


def test_a_missing_private_member_means_no_patch_at_all(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Twisted without a member the write-through reads: nothing is changed, one warning."""
    from twisted.internet import tcp

    from progrock.contrib import twisted_writes

    monkeypatch.delattr(tcp._AbortingMixin, "_aborting")  # as if Twisted renamed it
    twisteds = server.write
    with pytest.warns(RuntimeWarning, match=r"has no twisted\.internet\.tcp\.Server\._aborting"):
        assert twisted_writes.install() is False
    assert server.write is twisteds
    assert not getattr(server, twisted_writes._MARK)


def test_a_connection_member_the_constructor_no_longer_sets_means_no_patch(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_tempDataBuffer exists only on connections: a constructor that stops setting it keeps
    the patch off."""
    from twisted.internet import abstract

    from progrock.contrib import twisted_writes

    original = abstract.FileDescriptor.__init__

    def init(self: Any, reactor: Any = None) -> None:  # a Twisted whose buffer has moved
        original(self, reactor)

    monkeypatch.setattr(abstract.FileDescriptor, "__init__", init)
    twisteds = server.write
    with pytest.warns(RuntimeWarning, match=r"FileDescriptor\(\)\._tempDataBuffer"):
        assert twisted_writes.install() is False
    assert server.write is twisteds
