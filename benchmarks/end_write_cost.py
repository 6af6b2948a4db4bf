#!/usr/bin/env python
"""What recording a batch of ends in the database costs: ``progrock.tasks._write_endings``.

A poll that finds tasks ended writes them to the database (one transaction)
before it announces them, so this is on the path of every terminal message.
Uses the demo settings with a fresh SQLite database in a temporary folder,
creates ``--rounds`` batches of ``--batch`` running rows, and times ending
each batch (wall time of the calling thread; nothing else runs).

    .venv/bin/python benchmarks/end_write_cost.py [--batch 5] [--rounds 200]

To compare two versions, run it with ``PYTHONPATH=<checkout>/src`` for each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes; the median is shown")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="progrock-endcost-")
    os.environ["PROGROCK_DB"] = os.path.join(folder, "db.sqlite3")
    # The demo settings, always: the database must be the temporary one.
    os.environ["DJANGO_SETTINGS_MODULE"] = "progrock_demo.settings"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "example"))
    import django

    django.setup()
    from django.core.management import call_command

    from progrock.models import Task
    from progrock.protocol import Status
    from progrock.state import tasks

    call_command("migrate", verbosity=0)

    def running(n: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        Task.objects.bulk_create(
            Task(id=i, owner="user:1", kind="rock", params={}, status="running") for i in ids
        )
        return ids

    def end(ids: list[str]) -> None:
        endings = [tasks.Ending(i, Status.SUCCEEDED, 100.0, {"riffs": 3}, None, 5) for i in ids]
        tasks._write_endings(endings, datetime.now(UTC))

    for _ in range(20):  # connection, statement caches
        end(running(args.batch))
    passes = []
    for _ in range(args.repeat):
        batches = [running(args.batch) for _ in range(args.rounds)]
        began = time.perf_counter()
        for ids in batches:
            end(ids)
        passes.append((time.perf_counter() - began) / args.rounds * 1e6)
    print(
        f"_write_endings, {args.batch} rows: median {statistics.median(passes):.0f} us per batch "
        f"(passes: {' / '.join(f'{p:.0f}' for p in passes)})"
    )
    from django.db import connections

    connections.close_all()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
