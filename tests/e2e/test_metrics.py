"""Metrics end to end: the web view and every worker's and the delay server's
``--metrics-port``, scraped around a real task on the real processes."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from progrock.local.stack import Stack
from tests.e2e.conftest import MakeStack
from tests.e2e.taskrows import backend_ref, select, stored_id
from tests.e2e.wsclient import Client, new_session

pytestmark = [pytest.mark.e2e]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[str, Samples]:
    """The text a metrics endpoint answers, and its samples parsed by prometheus-client."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(scrapes: Mapping[str, Samples], name: str, **labels: str) -> float:
    return sum(value(s, name, **labels) for s in scrapes.values())


def wait_until_served(url: str, timeout: float = 60.0) -> None:
    """Wait for a metrics port: a worker counts as ready after 3 s without its ready
    line, and under load it may still be waiting for its database then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def scrape_all(stack: Stack) -> dict[str, tuple[str, Samples]]:
    found = {"web": scrape(stack.url + "/metrics")}
    for name, port in stack.metrics_ports.items():
        found[name] = scrape(f"http://{stack.host}:{port}/metrics")
    return found


def owner_of(stack: Stack, task_id: str) -> str:
    rows = select(stack, "SELECT owner FROM progrock_task WHERE id = %s", stored_id(stack, task_id))
    return str(rows[0][0])


async def test_every_process_kind_counts_a_real_task_and_names_no_task_or_owner(
    make_stack: MakeStack,
) -> None:
    """A task run moves the web's, the workers' and the delay server's series; no scrape
    holds its task id, backend ref, owner or session key."""
    stack = make_stack(metrics_port=0)
    assert set(stack.metrics_ports) == {"delay", *stack.worker_names}
    for port in stack.metrics_ports.values():
        wait_until_served(f"http://{stack.host}:{port}/metrics")
    before = {name: samples for name, (_, samples) in scrape_all(stack).items()}
    workers_before = {n: s for n, s in before.items() if n.startswith("worker")}

    session = new_session(stack.url)
    client = await Client.connect(stack.url, session)
    task_id = await client.start(kind="rock", params={"interval_ms": 100})  # about 3.4 s
    await client.recv_type("progress")
    during = {name: found for name, found in scrape_all(stack).items()}
    web_during = during["web"][1]
    assert value(web_during, "progrock_sockets_open") == 1
    assert value(web_during, "progrock_tasks", status="running") == 1
    assert value(web_during, "progrock_process_info", kind="web") == 1
    final = await client.until_terminal(task_id)
    assert final["type"] == "complete"
    await client.close()

    after = scrape_all(stack)
    samples = {name: s for name, (_, s) in after.items()}
    workers = {n: s for n, s in samples.items() if n.startswith("worker")}

    # web: every task message this socket got went through the pushed counter
    task_messages = [m for m in client.received if m.get("task_id") == task_id]
    pushed = value(samples["web"], "progrock_updates_pushed_total") - value(
        before["web"], "progrock_updates_pushed_total"
    )
    assert pushed == len(task_messages) >= 3  # started, progress..., complete
    assert value(samples["web"], "progrock_tasks", status="running") == 0

    # workers: one start, one success, polls and backend calls timed
    def moved(name: str, **labels: str) -> float:
        return total(workers, name, **labels) - total(workers_before, name, **labels)

    assert moved("progrock_tasks_started_total", kind="rock") == 1
    assert moved("progrock_tasks_ended_total", status="succeeded", error="none") == 1
    assert moved("progrock_backend_seconds_count", call="create") >= 1
    assert moved("progrock_backend_seconds_count", call="status") >= 3
    assert moved("progrock_poll_lateness_seconds_count") >= 3
    assert moved("progrock_updates_announced_total") >= 2
    assert moved("progrock_backend_errors_total", call="status", error="unavailable") == 0
    for name, found in workers.items():
        assert value(found, "progrock_process_info", kind="worker") == 1, name

    # the delay server delivered the task's ticks and reports its set
    delay = samples["delay"]
    assert value(delay, "progrock_delay_delivered_total") > value(
        before["delay"], "progrock_delay_delivered_total"
    )
    assert ("progrock_delay_pending", frozenset()) in delay
    assert ("progrock_delay_due_lag_seconds", frozenset()) in delay
    assert value(delay, "progrock_process_info", kind="delay") == 1

    # each kind shows its own series only
    assert not any(key[0].startswith("progrock_delay") for key in samples["web"])
    assert not any(key[0].startswith("progrock_poll") for key in delay)
    assert not any(
        key[0].startswith(("progrock_sockets", "progrock_delay"))
        for w in workers.values()
        for key in w
    )

    # nothing that names a task or an owner, in any scrape, mid-run or after
    secrets = {
        task_id,
        uuid.UUID(task_id).hex,
        backend_ref(stack, task_id),
        owner_of(stack, task_id),
        session,
    }
    for name, (text, _) in [*during.items(), *after.items()]:
        for secret in secrets:
            assert secret not in text, f"{name}'s metrics hold {secret!r}"
