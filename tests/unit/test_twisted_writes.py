"""progrock.twisted_writes on a real Twisted reactor and real sockets (in a subprocess:
the patch is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("twisted")

SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, threading
    from twisted.internet import reactor, protocol
    from zope.interface import implementer
    from twisted.internet.interfaces import IPullProducer
    if sys.argv[1] == "install":
        from progrock import twisted_writes
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

    class Server(protocol.Protocol):
        def connectionMade(self):
            t = self.transport
            if self.factory.mode == "writes":
                t.write(b"a" * 100)
                seen["small_waits_for_reactor"] = t in reactor.getWriters()
                t.write(BIG)
                seen["big_waits_for_reactor"] = t in reactor.getWriters()
                t.write(b"tail")  # queued behind what BIG left over
                t.loseConnection()
            else:
                t.registerProducer(Pull(t), False)

    def serve(mode):
        f = protocol.Factory()
        f.protocol, f.mode = Server, mode
        return reactor.listenTCP(0, f, interface="127.0.0.1").getHost().port

    def read_all(port, key):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        parts = []
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            parts.append(b)
        s.close()
        seen[key] = b"".join(parts)

    def client():
        try:
            read_all(serve_ports[0], "writes")
            read_all(serve_ports[1], "pull")
        finally:
            reactor.callFromThread(reactor.stop)

    serve_ports = [serve("writes"), serve("pull")]
    threading.Thread(target=client, daemon=True).start()
    reactor.run()
    print(json.dumps({
        "small_waits_for_reactor": seen["small_waits_for_reactor"],
        "big_waits_for_reactor": seen["big_waits_for_reactor"],
        "writes_in_order": seen["writes"] == b"a" * 100 + BIG + b"tail",
        "pull": seen["pull"].decode(),
        "pull_expected": "".join("%04d" % i for i in range(CHUNKS)),
    }))
    """
)


def run(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_write_goes_out_at_once_and_the_rest_keeps_its_order() -> None:
    got = run("install")
    assert got["small_waits_for_reactor"] is False  # sent at once: no epoll round
    assert got["big_waits_for_reactor"] is True  # what the socket did not take is buffered
    assert got["writes_in_order"] is True
    assert got["pull"] == got["pull_expected"]  # a pull producer is still asked for more


def test_without_it_twisted_waits_for_the_reactor() -> None:
    """The same script without install(): the first check is what the patch changes."""
    got = run("plain")
    assert got["small_waits_for_reactor"] is True
    assert got["writes_in_order"] is True and got["pull"] == got["pull_expected"]
