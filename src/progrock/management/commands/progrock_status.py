"""``manage.py progrock_status``: the live ProgRock processes of each kind, from their heartbeats.

Exit status: 0 when every required kind (by default a worker and a delay
server, the processes a task needs to move) has a live process, 1 when one is
missing (each missing kind is named on stderr with the command that runs it),
2 when Redis cannot be read. ``--json`` prints one JSON object for machines.
``--this-host`` counts only the processes of this host (its ``hostname``): a
container's readiness probe (``progrock_status --require worker --this-host``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any, Final

import redis.asyncio as aioredis
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from progrock import heartbeat
from progrock.conf import progrock_settings
from progrock.database_url import mask_password
from progrock.preflight import TIMEOUT, one_line

DEFAULT_REQUIRED = ("worker", "delay")


def kinds_list(text: str) -> tuple[str, ...]:
    """``--require``'s value: comma-separated kinds."""
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    wrong = [kind for kind in kinds if kind not in heartbeat.KINDS]
    if wrong or not kinds:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(heartbeat.KINDS)}, got {text!r}"
        )
    return kinds


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_OWN = {"kind", "host", "pid", "started_at", "age_s", "last_beat_s", "lag_ms", "cpu"}


def describe(process: dict[str, Any]) -> str:
    """One process on one line: kind, where, age, last beat, loop lag, CPU and its own figures."""
    parts = [
        f"{process['kind']:<6}",
        f"{process['host']}:{process['pid']}",
        f"up {_duration(process.get('age_s'))}",
        f"beat {process['last_beat_s']:.1f}s ago",
    ]
    if isinstance(process.get("lag_ms"), (int, float)):
        parts.append(f"lag {process['lag_ms']:g} ms")
    if isinstance(process.get("cpu"), (int, float)):
        parts.append(f"cpu {process['cpu'] * 100:.0f}%")
    parts += [f"{key} {value}" for key, value in process.items() if key not in _OWN]
    return "  ".join(parts)


#: Said after "none live": a web process beats from its first socket, not its start
#: (an ASGI server gives an application no start-up hook).
NONE_LIVE_NOTE: Final = {"web": " (a web process shows here from its first socket on)"}


class Command(BaseCommand):
    help = (
        "List the live ProgRock processes (web, worker, delay server) from their heartbeats; "
        "exit 1 if a required kind has none."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--this-host",
            action="store_true",
            help="count only this host's processes (a container's readiness probe)",
        )
        parser.add_argument(
            "--require",
            type=kinds_list,
            default=DEFAULT_REQUIRED,
            metavar="KINDS",
            help=(
                "comma-separated kinds that must have a live process "
                f"(default: {','.join(DEFAULT_REQUIRED)}; a web process beats from its "
                "first ProgRock socket)"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            now_ms, beats = asyncio.run(self._read())
        except (RedisError, OSError) as exc:
            url = mask_password(progrock_settings.REDIS_URL)
            raise CommandError(
                f"cannot read the heartbeats from Redis at {url}: {one_line(exc)}", returncode=2
            ) from None
        if options["this_host"]:
            here = socket.gethostname()
            beats = [beat for beat in beats if beat.host == here]
        required: tuple[str, ...] = options["require"]
        live = {beat.kind for beat in beats}
        missing = [kind for kind in required if kind not in live]
        processes = [beat.as_dict(now_ms) for beat in beats]
        if options["json"]:
            report = {
                "ok": not missing,
                "required": list(required),
                "missing": missing,
                "messages": [heartbeat.missing_sentence(kind) for kind in missing],
                "processes": processes,
            }
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for kind in heartbeat.KINDS:
                of_kind = [p for p in processes if p["kind"] == kind]
                if not of_kind:
                    self.stdout.write(f"{kind:<6}  none live{NONE_LIVE_NOTE.get(kind, '')}")
                for process in of_kind:
                    self.stdout.write(describe(process))
            for kind in missing:
                self.stderr.write(heartbeat.missing_sentence(kind))
        if missing:
            raise SystemExit(1)

    async def _read(self) -> tuple[float, list[heartbeat.Beat]]:
        client = aioredis.Redis.from_url(
            progrock_settings.REDIS_URL, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        try:
            return await heartbeat.live_processes(client, progrock_settings.KEY_PREFIX)
        finally:
            await client.aclose()
