"""ProgRock on several hosts, shown on one machine: the reference deployment.

Each host is a network namespace of its own on one private network
(10.77.0.0/24, a bridge in a namespace of its own; see tests/hosts/netns.py
and docs/howto-deploy.md, which draws it):

    data     10.77.0.2    Redis :6379, PostgreSQL :5432
    web-a    10.77.0.11   web :8000
    web-b    10.77.0.12   web :8000
    work-1   10.77.0.21   worker, delay server
    work-2   10.77.0.22   worker, delay server
    backend  10.77.0.31   the reference backend task service :8001
    client   10.77.0.100  this test's sockets

Redis and PostgreSQL are the private servers of the other tests, bound to
the data host's address; every other process runs the command
deploy/commands.toml gives its kind (the one the compose file, the Procfile
and the systemd units run), with the environment deploy/progrock.env
describes. Needs root and ``ip``: skipped, saying why, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from progrock.exceptions import ProgRockError
from progrock.local.postgres_server import PostgresServer
from progrock.local.redis_server import RedisServer
from tests.e2e.wsclient import TERMINAL, Client, assert_well_ordered, new_session
from tests.hosts.netns import Namespace, Network, why_unavailable
from tests.recipes import commands, here

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]

SUBNET = "10.77.0"
HOSTS = {"data": 2, "web-a": 11, "web-b": 12, "work-1": 21, "work-2": 22, "backend": 31}
CLIENT = 100
WEB_PORT = 8000  # deploy/commands.toml: one web process per host, on 8000
BACKEND_PORT = 8001
START_WITHIN = 60.0  # seconds for every process to be ready (a loaded 2-core machine)
TASKS_PER_WEB = 6
# 25 steps of 0.4 s: about 10 s, long enough to cut a worker host mid-run.
TASK = {"kind": "rock", "params": {"step": 4, "interval_ms": 400}}
FINISH_WITHIN = 45.0  # the tasks' 10 s, a sweep (5 s) to notice, slack for load
_REARMED = re.compile(r"sweep re-armed \d+ stalled poll chains")


def url(host: str, port: int = WEB_PORT) -> str:
    return f"http://{SUBNET}.{HOSTS[host]}:{port}"


@dataclass
class Process:
    """A process started on a host, its output in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Hosts:
    """The running deployment: hosts, servers, processes, and how to stop them all."""

    def __init__(self, network: Network, logs: Path) -> None:
        self.network = network
        self.logs = logs
        self.processes: dict[str, Process] = {}
        self.env: dict[str, str] = {}
        self.frozen: set[str] = set()

    def host(self, label: str) -> Namespace:
        return self.network.hosts[label]

    def start(self, host: str, kind: str, name: str | None = None) -> Process:
        """Start ``kind``'s deploy command on ``host``, in that host's data directory."""
        name = name or f"{kind}@{host}"
        data_dir = self.logs / host
        data_dir.mkdir(exist_ok=True)
        env = {**self.env, "PROGROCK_DATA_DIR": str(data_dir)}
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = self.host(host).call(
                subprocess.Popen,
                here(commands()[kind]),
                env=env,
                cwd=data_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.processes[name] = Process(name, popen, log)
        return process

    def wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Poll ``ready`` until true; fail naming ``what`` if time runs out or a process dies."""
        while not ready():
            for process in self.processes.values():
                code = process.popen.poll()
                if code is not None and process.name != "migrate":
                    raise AssertionError(f"{process.name} exited with {code} waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not ready within {START_WITHIN:g} s")
            time.sleep(0.05)

    def freeze(self, name: str) -> None:
        """Stop a process (SIGSTOP): it holds what it holds, and does nothing more."""
        os.killpg(self.processes[name].popen.pid, signal.SIGSTOP)
        self.frozen.add(name)

    def stop(self) -> None:
        """SIGTERM every process (SIGKILL a stopped one), SIGKILL what is left after 5 s."""
        for process in self.processes.values():
            if process.popen.poll() is None:
                sig = signal.SIGKILL if process.name in self.frozen else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, sig)
        deadline = time.monotonic() + 5.0
        for process in self.processes.values():
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait()

    def tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {p.name} (last {lines} lines)\n" + "\n".join(p.output().splitlines()[-lines:])
            for p in self.processes.values()
        )


def accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def beating(redis_url: str, kind: str, pid: int) -> Callable[[], bool]:
    """Whether the process ``pid`` of ``kind`` has a heartbeat in Redis (it is serving)."""

    def check() -> bool:
        client = redis.Redis.from_url(redis_url, socket_timeout=1)
        try:
            members = client.zrange("progrock:hb", 0, -1)
        finally:
            client.close()
        return any(m.decode().startswith(f"{kind}|") and f"|{pid}|" in m.decode() for m in members)

    return check


@pytest.fixture
def network() -> Iterator[Network]:
    """The private network and its hosts; every namespace is deleted at the end."""
    reason = why_unavailable()
    if reason:
        pytest.skip(f"several-hosts test skipped: {reason}")
    try:
        made = Network(SUBNET)
    except RuntimeError as exc:
        pytest.skip(f"several-hosts test skipped: cannot make network namespaces here: {exc}")
    try:
        for label, last in HOSTS.items():
            made.add_host(label, last)
        made.add_host("client", CLIENT)
        yield made
    finally:
        made.close()


@pytest.fixture
def deployment(network: Network, tmp_path: Path) -> Iterator[Hosts]:
    """Redis and PostgreSQL on the data host, then every ProgRock process on its host."""
    data = network.hosts["data"]
    address = f"{SUBNET}.{HOSTS['data']}"
    try:
        # A host cut off inside a transaction holds its row locks until the server
        # drops its session (docs/howto-deploy.md): here after 5 s.
        postgres = data.call(
            PostgresServer,
            5432,
            host=address,
            options={"idle_in_transaction_session_timeout": "5s"},
        )
    except ProgRockError as exc:
        pytest.skip(f"several-hosts test skipped: {exc}")
    hosts = Hosts(network, tmp_path)
    redis_server = data.call(RedisServer, 6379, tmp_path / "redis", host=address)
    try:
        data.call(redis_server.start)
        data.call(postgres.start)
        hosts.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
            # The same on every host: a session made by one web host is valid on the other.
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis_server.url,
            "PROGROCK_BACKEND_URL": url("backend", BACKEND_PORT),
            "DJANGO_ALLOWED_HOSTS": f"{SUBNET}.{HOSTS['web-a']},{SUBNET}.{HOSTS['web-b']}",
        }
        network.hosts["client"].call(start_all, hosts, redis_server.url)
        yield hosts
    finally:
        try:
            hosts.stop()
            print(hosts.tails())  # shown when the test failed
        finally:
            redis_server.cleanup()
            postgres.cleanup()


def start_all(hosts: Hosts, redis_url: str) -> None:
    """The release step (migrate, on web-a), then every process; wait until each serves.
    Runs on the client host: the readiness checks reach the others over the network."""
    deadline = time.monotonic() + START_WITHIN
    migrate = hosts.start("web-a", "migrate", name="migrate")
    backend = hosts.start("backend", "backend")
    hosts.wait("migrate", lambda: migrate.popen.poll() is not None, deadline)
    assert migrate.popen.returncode == 0, migrate.output()
    for host in ("work-1", "work-2"):
        hosts.start(host, "worker")
        hosts.start(host, "delay")
    for host in ("web-a", "web-b"):
        hosts.start(host, "web")
    hosts.wait("backend", lambda: "listening on" in backend.output(), deadline)
    for host in ("work-1", "work-2"):
        for kind in ("worker", "delay"):
            pid = hosts.processes[f"{kind}@{host}"].popen.pid
            hosts.wait(f"{kind}@{host}", beating(redis_url, kind, pid), deadline)
    for host in ("web-a", "web-b"):
        address = f"{SUBNET}.{HOSTS[host]}"
        hosts.wait(f"web@{host}", lambda a=address: accepts(a, WEB_PORT), deadline)


def test_tasks_run_through_either_web_host_and_survive_a_worker_host_cut_off(
    deployment: Hosts, network: Network
) -> None:
    """Tasks started through web A are watched through web B and the other way round;
    work-1 hanging, then cut off, leaves every task completing through work-2, the poll
    chains work-1 held re-armed by the sweep; each socket gets one terminal message each."""
    seen, running_at_cut = network.hosts["client"].call(asyncio.run, flow(deployment))
    assert running_at_cut == 2 * TASKS_PER_WEB, "the cut came after a task had ended"
    for socket_name, messages in seen.items():
        for task_id, of_task in messages.items():
            terminal = [m["type"] for m in of_task if m["type"] in TERMINAL]
            assert terminal == ["complete"], (socket_name, task_id, of_task[-3:])
            assert_well_ordered(of_task)
    survivor = deployment.processes["worker@work-2"].output()
    assert _REARMED.search(survivor), "work-2's worker re-armed no poll chain"


async def flow(hosts: Hosts) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], int]:
    """The client's side (on the client host): every socket's messages of every task
    (snapshots left out), and how many tasks were running when work-1 was cut off."""
    session = await asyncio.to_thread(new_session, url("web-a"))
    a = await Client.connect(url("web-a"), session)
    b = await Client.connect(url("web-b"), session)
    try:
        on_a = [await a.start(**TASK) for _ in range(TASKS_PER_WEB)]
        on_b = [await b.start(**TASK) for _ in range(TASKS_PER_WEB)]
        # Each socket watches the tasks started through the other web host.
        for watcher, task_ids in ((a, on_b), (b, on_a)):
            for task_id in task_ids:
                await watcher.send({"action": "subscribe", "task_id": task_id})
        every = on_a + on_b
        # Under way through both web hosts: progress of every task on both sockets.
        await asyncio.gather(until(a, every, moved), until(b, every, moved))
        running = sum(1 for t in every if not ended(a, t) and not ended(b, t))
        await asyncio.to_thread(hang_then_cut, hosts, "work-1")
        await asyncio.gather(
            until(a, every, ended, FINISH_WITHIN), until(b, every, ended, FINISH_WITHIN)
        )
        seen = {
            name: {t: [m for m in ws.of_task(t) if m["type"] != "snapshot"] for t in every}
            for name, ws in (("web-a", a), ("web-b", b))
        }
        return seen, running
    finally:
        await a.close()
        await b.close()


def hang_then_cut(hosts: Hosts, host: str) -> None:
    """``host`` hangs (its processes stopped), then drops off the network (its link down).

    Hanging first makes the loss certain rather than likely: a worker waits for
    its next message in a blocking pop that Redis serves first come, first
    served, so the hung worker's pending pop takes the next poll message due,
    which it never handles (a worker cut off while running loses that one
    too, unless the cut falls while its pop is on the wire). The link goes
    down once Redis has handed it a message: its connection is no longer
    blocked.
    """
    address = f"{SUBNET}.{HOSTS[host]}:"
    for name in (f"worker@{host}", f"delay@{host}"):
        hosts.freeze(name)
    client = redis.Redis.from_url(hosts.env["REDIS_URL"], socket_timeout=2)
    try:
        deadline = time.monotonic() + 10.0
        while any(
            c["addr"].startswith(address) and "b" in c["flags"] and c["cmd"] == "bzpopmin"
            for c in client.client_list()
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"the hung {host}'s pending pop was never served")
            time.sleep(0.02)
    finally:
        client.close()
    hosts.network.cut(host)


def moved(client: Client, task_id: str) -> bool:
    return any(m.get("type") == "progress" for m in client.of_task(task_id))


def ended(client: Client, task_id: str) -> bool:
    return any(m.get("type") in TERMINAL for m in client.of_task(task_id))


async def until(
    client: Client,
    task_ids: list[str],
    done: Callable[[Client, str], bool],
    timeout: float = 30.0,
) -> None:
    """Read ``client``'s messages until ``done`` holds for every task."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(done(client, t) for t in task_ids):
        try:
            await client.recv(timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            pending = [t for t in task_ids if not done(client, t)]
            raise AssertionError(
                f"not {done.__name__} within {timeout:g} s: {len(pending)} tasks: {pending}"
            ) from None
