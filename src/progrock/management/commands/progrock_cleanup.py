"""``manage.py progrock_cleanup --older-than 30d``: delete the rows of tasks that ended long ago.

Only ended tasks (succeeded, failed, cancelled) whose end is older than the
duration; never a queued or running one. ``--dry-run`` counts without
deleting. Without ``--older-than``, ``PROGROCK["RETENTION"]`` is the duration.
A malformed duration exits 2 with the usage, having deleted nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from progrock import retention
from progrock.conf import progrock_settings


def duration(text: str) -> float:
    """``--older-than``'s value, in seconds."""
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Delete the rows of tasks that ended more than a duration ago (e.g. --older-than 30d); "
        "queued and running tasks are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=duration,
            metavar="DURATION",
            help=(
                f"{retention.DURATION_SHAPE}; default: PROGROCK['RETENTION'] "
                "(required when that is None)"
            ),
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )
        self._parser = parser

    def handle(self, *args: Any, **options: Any) -> None:
        seconds: float | None = options["older_than"]
        if seconds is None:
            seconds = progrock_settings.RETENTION
        if seconds is None:
            self._parser.error(
                "--older-than is required: PROGROCK['RETENTION'] is None (keep every row)"
            )
            return  # not reached: error() exits (or raises CommandError under call_command)
        shown = retention.format_duration(seconds)
        if options["dry_run"]:
            count = retention.ended_before(seconds).count()
            self.stdout.write(f"would delete {count} tasks that ended more than {shown} ago")
            return
        count = retention.delete_ended(seconds)
        self.stdout.write(f"deleted {count} tasks that ended more than {shown} ago")
