"""Prometheus metrics of every ProgRock process kind (the ``metrics`` extra).

With ``prometheus-client`` installed (``pip install "django-progrock[metrics]"``)
each process keeps the series below in the library's default registry; without
it every metric here is a no-op and :data:`AVAILABLE` is False. Nothing is
exposed until asked: a web process serves them through the view the project
includes (:mod:`progrock.web.metrics`), ``runprogrock`` and ``rundelay`` on
``--metrics-port`` (:func:`serve`). docs/metrics.md lists every series.

Labels are bounded: a task kind (:func:`kind_label`), a final status, an
error code, a backend call, a repair; never a task id, an owner, an address
or a message.

The web process's per-frame figures (updates pushed, sockets open) are plain
integers in :data:`web` (incrementing one costs a few tens of nanoseconds on
the hottest path), read when a scrape asks (:class:`_WebCollector`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

logger = logging.getLogger("progrock.metrics")

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:  # the metrics extra is not installed: every metric is a no-op
    prometheus_client = None  # type: ignore[assignment]

#: Whether ``prometheus-client`` is installed (else every metric is a no-op).
AVAILABLE: Final = prometheus_client is not None
#: What installs it.
INSTALL: Final = 'pip install "django-progrock[metrics]"'

#: Seconds: from a tick a few ms late to one a whole sweep late.
LATENESS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds: a backend call, from a local service to one about to time out.
BACKEND_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: At most this many task kinds get a label of their own when ``KINDS`` is None.
MAX_KIND_LABELS: Final = 50
#: The error codes ProgRock ends tasks with (any other is counted as ``other``).
ERROR_CODES: Final = frozenset(
    {"lost", "backend_failed", "backend_unreachable", "backend_rejected", "not_started"}
)


class _Noop:
    """A metric that records nothing (``prometheus-client`` is not installed)."""

    def labels(self, *values: str, **named: str) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


# The collectors each process kind exposes, registered by mark_process(kind): a
# worker's scrape has no delay-server series and the other way round.
_OF_KIND: dict[str, list[Any]] = {"worker": [], "delay": [], "web": []}


def _keep(kind: str | None, metric: Any) -> Any:
    if kind is None:  # every kind: registered at once
        prometheus_client.REGISTRY.register(metric)
    else:
        _OF_KIND[kind].append(metric)
    return metric


def _counter(kind: str | None, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
    if prometheus_client is None:
        return _Noop()
    return _keep(kind, prometheus_client.Counter(name, doc, labels, registry=None))


def _gauge(kind: str | None, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
    if prometheus_client is None:
        return _Noop()
    return _keep(kind, prometheus_client.Gauge(name, doc, labels, registry=None))


def _histogram(
    kind: str, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
) -> Any:
    if prometheus_client is None:
        return _Noop()
    metric = prometheus_client.Histogram(name, doc, labels, buckets=buckets, registry=None)
    return _keep(kind, metric)


# -- every kind ---------------------------------------------------------------------

PROCESS = _gauge(
    None, "progrock_process_info", "1 for this process, labelled with its kind", ["kind"]
)
TASKS_ENDED = _counter(
    None,
    "progrock_tasks_ended_total",
    "Tasks this process ended, by final status and error code ('none' unless failed)",
    ["status", "error"],
)

# -- workers ------------------------------------------------------------------------

TASKS_STARTED = _counter(
    "worker",
    "progrock_tasks_started_total",
    "Tasks the backend created and a worker started",
    ["kind"],
)
UPDATES_ANNOUNCED = _counter(
    "worker", "progrock_updates_announced_total", "Progress changes a worker published to watchers"
)
POLL_LATENESS = _histogram(
    "worker",
    "progrock_poll_lateness_seconds",
    "Per poll batch, how late its most overdue tick was handled",
    (),
    LATENESS_BUCKETS,
)
BACKEND_SECONDS = _histogram(
    "worker",
    "progrock_backend_seconds",
    "Duration of calls to the backend task service (call: create, status, cancel)",
    ["call"],
    BACKEND_BUCKETS,
)
BACKEND_ERRORS = _counter(
    "worker",
    "progrock_backend_errors_total",
    "Failed backend calls or entries (error: unavailable, rejected, unknown_ref, "
    "bad_entry, exception)",
    ["call", "error"],
)
SWEEP_REPAIRS = _counter(
    "worker",
    "progrock_sweep_repairs_total",
    "What the sweep repaired (repair: rearmed, not_started, unannounced, retention_deleted)",
    ["repair"],
)

# -- delay servers ------------------------------------------------------------------

DELAY_PENDING = _gauge(
    "delay",
    "progrock_delay_pending",
    "Delayed messages waiting in the delay set (at the last heartbeat)",
)
DELAY_DUE_LAG = _gauge(
    "delay",
    "progrock_delay_due_lag_seconds",
    "How overdue the delay set's most overdue message was at the last heartbeat (0: none due)",
)
DELAY_DELIVERED = _counter(
    "delay", "progrock_delay_delivered_total", "Delayed messages a delay server delivered"
)


# -- web processes ------------------------------------------------------------------

TASKS = _gauge(
    "web",
    "progrock_tasks",
    "Tasks queued or running now, counted in the database by the web metrics view",
    ["status"],
)

# Per-frame figures: plain integers, read at scrape time.


class WebFigures:
    """A web process's per-frame figures: plain integers the consumer bumps."""

    __slots__ = ("sockets_open", "updates_pushed")

    def __init__(self) -> None:
        self.sockets_open = 0
        self.updates_pushed = 0


web: Final = WebFigures()


class _WebCollector:
    """Yields :data:`web`'s figures when a scrape asks."""

    def collect(self) -> Iterator[Any]:
        sockets = GaugeMetricFamily(
            "progrock_sockets_open", "ProgRock WebSockets this web process holds open"
        )
        sockets.add_metric([], web.sockets_open)
        yield sockets
        pushed = CounterMetricFamily(
            "progrock_updates_pushed",
            "Task messages this web process sent to its sockets",
        )
        pushed.add_metric([], web.updates_pushed)
        yield pushed


if prometheus_client is not None:
    _OF_KIND["web"].append(_WebCollector())


# -- labels -------------------------------------------------------------------------

_kinds_seen: set[str] = set()


def kind_label(kind: str) -> str:
    """A task kind as a label: itself if ``KINDS`` lists it (or, with ``KINDS`` None,
    among the first :data:`MAX_KIND_LABELS` kinds seen), else ``other``."""
    from progrock.conf import progrock_settings

    allowed = progrock_settings.KINDS
    if allowed is not None:
        return kind if kind in allowed else "other"
    if kind in _kinds_seen:
        return kind
    if len(_kinds_seen) < MAX_KIND_LABELS:
        _kinds_seen.add(kind)
        return kind
    return "other"


def error_label(error: object) -> str:
    """A task's error as a label: its code if ProgRock's own, ``none`` or ``other``."""
    if not error:
        return "none"
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if code in ERROR_CODES else "other"


# -- exposure -----------------------------------------------------------------------

_marked: set[str] = set()


def mark_process(kind: str) -> None:
    """Say which kind this process is: its kind's series join the registry, and
    ``progrock_process_info{kind=...}`` is 1."""
    if kind in _marked or prometheus_client is None:
        return
    _marked.add(kind)
    for metric in _OF_KIND[kind]:
        prometheus_client.REGISTRY.register(metric)
    PROCESS.labels(kind).set(1)


def render() -> tuple[bytes, str]:
    """The text exposition of this process's metrics, and its content type."""
    if prometheus_client is None:
        raise RuntimeError(f"prometheus-client is not installed ({INSTALL})")
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST


def add_port_argument(parser: Any) -> None:
    """``--metrics-port [HOST:]PORT`` of ``runprogrock`` and ``rundelay``."""
    parser.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help=(
            "serve this process's Prometheus metrics over HTTP on PORT (HOST: every "
            "interface unless given; needs django-progrock[metrics]; docs/metrics.md)"
        ),
    )


def parse_address(text: str) -> tuple[str, int]:
    """``--metrics-port``'s value ``[HOST:]PORT`` as ``(host, port)``; host ``0.0.0.0``
    (every interface, as Prometheus' exporters do) unless given."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be PORT or HOST:PORT with a port in 0..65535, got {text!r}")
    return host, int(port)


def serve(kind: str, address: str) -> tuple[str, int]:
    """Serve this process's metrics over HTTP at ``address`` (``[HOST:]PORT``) from a
    daemon thread; returns the address bound (port 0: a free one). Raises
    :class:`~progrock.exceptions.ProgRockError` (one line) without
    ``prometheus-client``, or if the address cannot be bound."""
    from progrock.exceptions import ProgRockError

    if prometheus_client is None:
        raise ProgRockError(f"--metrics-port needs prometheus-client: {INSTALL}")
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ProgRockError(f"--metrics-port {exc}") from None
    mark_process(kind)
    try:
        server, _ = prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise ProgRockError(
            f"--metrics-port cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    bound = server.server_address
    _servers.append(server)
    logger.info("%s metrics on http://%s:%d/metrics", kind, bound[0], bound[1])
    return str(bound[0]), int(bound[1])


_servers: list[Any] = []  # kept: each serves until the process ends
