"""ProgRock's tuning constants: the numbers that are not settings, each with why.

Settings (``PROGROCK`` in Django settings, :mod:`progrock.conf`) are what a
deployer decides. These are what the code needs a number for and a deployer
has no reason to change: batch sizes, windows and timeouts chosen by
measurement (``benchmarks/``, ``docs/performance.md``) or by what the
protocol promises. They live here, not in the modules that use them, so that
one page shows every knob. Tests that need another value patch the name in
the module that reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# -- polls ---------------------------------------------------------------------

# Poll ticks are due on this grid (seconds), so tasks share due times and are
# polled together (one delayed message, one backend call per due time). Where a
# task's rhythm begins (first tick, retry, re-armed chain) it goes on the grid;
# later ticks keep its phase when POLL_INTERVAL is a multiple of it (else every
# tick is rounded up, which stretches the interval: 0.25 s polls every 260 ms).
TICK_GRID: Final = 0.02

# Most poll ticks merged into one worker message (and so one status request to
# the backend): large enough to batch 2,000 tasks in ten messages, well under
# the reference backend's 1,000 ids a request.
TICK_BATCH: Final = 200

# Backend calls that fail are retried after RETRY_BASE seconds, doubling up to
# RETRY_MAX (until the FAILURE_BUDGET setting runs out): quick for a blip, no
# hammering of a backend that is down.
RETRY_BASE: Final = 0.2
RETRY_MAX: Final = 5.0

# Seconds between database writes of a running task's progress: live progress
# is in Redis; the row is the durable copy a rebuild starts from, not a
# per-step write load on the database.
DB_PROGRESS_INTERVAL: Final = 10.0

# A push task's report is held (coalesced with later ones) when its last
# published report is less than this fraction of POLL_INTERVAL old: a producer
# that reports at the cadence, with a little jitter, is never held back (a
# held report waits for the rest of the window), one that reports faster is.
PUSH_HOLD_FRACTION: Final = 0.75

# A rebuilt live state (Redis lost it) starts its seq this far ahead of the
# row's, which is copied only every DB_PROGRESS_INTERVAL: sockets that saw more
# must not take the rebuilt task's messages for old ones.
REBUILD_SEQ_MARGIN: Final = 1000

# -- client input --------------------------------------------------------------

# Largest accepted WebSocket frame or HTTP API body, in bytes: a guard against
# memory abuse, far above any real request.
MAX_FRAME_BYTES: Final = 65_536

# Largest ``params`` object of a start, in bytes of compact JSON: params say
# what to do; data a task works on belongs in your database (pass its id).
MAX_PARAMS_BYTES: Final = 8_192

# -- web process ---------------------------------------------------------------

# Starts forwarded to the workers together in one channel-layer message, at
# most this many.
FORWARD_BATCH: Final = 100

# Seconds a start waits for others to share its channel-layer message and its
# watchdog call (a few Redis round trips each): at 100 starts a second, most
# would otherwise go alone.
FORWARD_WINDOW: Final = 0.01

# Seconds a batch's watchdog call and send may take together before its
# callers are told it failed (a frozen Redis must not hold them forever).
FORWARD_TIMEOUT: Final = 3.0

# Pub/sub replies held before the socket stops being read: backpressure to
# Redis (whose client-output-buffer limit then applies as to any client).
PUBSUB_HIGH_WATER: Final = 10_000

# Seconds a stopping web process (SIGTERM) spends closing its sockets with 1012
# before the ASGI server gets the signal: the wait for answers to starts
# (START_ANSWER_WAIT) and a closing handshake (a round trip; Autobahn drops a
# silent client after 1 s), under `progrock up`'s 5 s stop timeout.
WEB_STOP_GRACE: Final = 3.0

# Seconds a socket closing for a restart first waits for the answers to the
# starts it forwarded (a worker answers in milliseconds): their `started`
# must not be lost in the restart.
START_ANSWER_WAIT: Final = 2.0

# -- worker --------------------------------------------------------------------

# Messages a worker handles at once, per lane: poll ticks, and control messages
# (cancel, sweep) whose database and backend work is slower. A burst of
# control work never holds up the polls.
WORKER_LANES: Final[Mapping[str, int]] = MappingProxyType({"poll": 32, "control": 16})

# Starts taken in one batch (one database transaction, one backend create call).
START_BATCH: Final = 100

# Start batches in flight at most. One runner takes batch after batch; another
# begins only while every runner has been on its batch for START_PATIENCE
# seconds (a slow backend or database): more runners only crowd a busy
# worker's event loop and delay the polls.
START_RUNNERS: Final = 4
START_PATIENCE: Final = 0.5

# Seconds a worker lets a burst of starts gather before taking its first batch.
START_WINDOW: Final = 0.02

# Seconds a stopping worker (SIGTERM) waits for the work in hand (polls and
# their next ticks, start batches) before it exits anyway: under Docker's
# default 10 s stop timeout, so it exits on its own and says so; the sweep
# re-arms whatever it had to leave.
WORKER_STOP_GRACE: Final = 8.0

# Seconds a task queue's job (Celery, django.tasks) may wait in its queue before
# the sweep fails its task `lost` (it never started: the broker lost it). Queue
# backlogs of minutes to hours are normal and must not fail; a cancel frees the
# owner's slot sooner. Not a setting: no deployer tunes how long to wait for a
# job their own queue lost.
QUEUED_PUSH_TIMEOUT: Final = 24 * 3600.0

# -- delay server --------------------------------------------------------------

# Seconds a busy delay server lets due messages gather between two passes:
# under load they merge into fewer, larger deliveries; this bounds the extra
# lateness (an idle server delivers at once).
DELAY_BATCH_WINDOW: Final = 0.004

# Seconds a claimed delayed message stays leased to its server: a server that
# dies holding it gives it back after this (far longer than a pass takes).
DELAY_LEASE: Final = 30.0

# Most due messages claimed in one pass.
DELAY_CLAIM_LIMIT: Final = 1000

# Seconds before a delivery that failed (channel full, Redis error) is retried.
DELAY_RETRY: Final = 0.1

# Seconds between two looks at the store even without a wake-up message: a
# lost pub/sub announcement delays a message at most this long.
DELAY_RECHECK: Final = 1.0

# Seconds a stopping delay server (SIGTERM) lets the delivery pass in hand
# finish; a pass still running then is cut, and what it had claimed and not
# sent goes back to pending at once (not after DELAY_LEASE).
DELAY_STOP_GRACE: Final = 5.0

# -- processes -----------------------------------------------------------------

# Garbage-collector thresholds (gen0, gen1, gen2) progrock.runtime.tune_gc sets
# in runprogrock and rundelay (Python's are (700, 10, 10)): a busy process
# allocates a few short-lived dicts per update, and would collect all the time.
GC_THRESHOLDS: Final = (50_000, 50, 100)

# -- Redis connections ---------------------------------------------------------

# Explicit client timeouts (seconds): never a library default that may change.
REDIS_SOCKET_TIMEOUT: Final = 10.0
REDIS_CONNECT_TIMEOUT: Final = 5.0
