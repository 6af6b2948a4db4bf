"""One load-generator process: ``count`` simulated browsers, one rock task each.

Run by ``run.py`` (never by hand). Talks to its parent over stdin/stdout:

1. connects its sockets in a ramp (``--connect-rate`` per second), waits for
   each greeting, then prints ``ready <connected> <failed>``;
2. reads ``go <t>`` (a ``time.monotonic()`` instant, shared by all load
   processes on this machine) and starts socket *i* at
   ``t + i / total * start_window``;
3. records the arrival time and progress of every update (and ProgRock's task
   id, from which ``run.py`` learns when the backend created the task) until
   each task completes, fails or times out, closes each socket as its task ends, writes
   the records as JSON to ``--out`` and prints ``done``.

The sockets use the lean client of ``_wsclient.py``, not the ``websockets``
library: the load generator shares the machine with the stack it measures, and
the library costs several times more CPU per received update.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from typing import Any

from _client import classify, origin_of, start_message
from _procs import raise_fd_limit
from _wsclient import Connection, connect


class Task:
    """What one simulated browser saw."""

    __slots__ = (
        "complete",
        "connect_s",
        "error",
        "index",
        "progress",
        "seqs",
        "t_start",
        "task_id",
        "times",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.connect_s: float | None = None
        self.t_start: float | None = None
        self.times: list[float] = []
        self.progress: list[float] = []
        self.seqs: list[int | None] = []
        self.task_id: str | None = None  # ProgRock's; the 2017 design has none
        self.complete = False
        self.error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "connect_s": self.connect_s,
            "t_start": self.t_start,
            "times": self.times,
            "progress": self.progress,
            "seqs": self.seqs,
            "task_id": self.task_id,
            "complete": self.complete,
            "error": self.error,
        }


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tasks = [Task(args.first + i) for i in range(args.count)]
        self.pending = args.count
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.go: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.start_frame = json.dumps(start_message(args.target))
        # Push mode (push_run.py): socket i subscribes to a task a producer
        # reports, with the session cookie of the task's owner.
        self.push: list[dict[str, str]] | None = None
        if args.push_file:
            with open(args.push_file) as fh:
                self.push = json.load(fh)
        self.task_cpu_s = 0.0
        self.task_wall_s = 0.0
        self.last_rx = time.monotonic()

    def _connect_done(self, ok: bool) -> None:
        self.connected += ok
        self.pending -= 1
        if self.pending == 0:
            self.all_connected.set()

    async def browser(self, task: Task, connect_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, connect_at - loop.time()))
        began = time.monotonic()
        ws: Connection | None = None
        try:
            url = self.args.url
            push = self.push[task.index] if self.push is not None else None
            ws = await connect(
                url,
                origin=origin_of(url),
                open_timeout=self.args.connect_timeout,
                cookie=f"sessionid={push['session']}" if push else None,
            )
            greeting = json.loads(await asyncio.wait_for(ws.recv(), self.args.connect_timeout))
            if classify(greeting) != "greeting":
                raise ValueError(f"expected the greeting {{'accept': true}}, got {greeting!r}")
        except Exception as exc:
            task.error = f"connect: {exc!r}"[:300]
            self._connect_done(False)
            if ws is not None:  # connected, but not to a ProgRock-like socket
                await ws.close()
            return
        task.connect_s = time.monotonic() - began
        if push is not None:  # subscribed before its producer begins
            task.task_id = push["task_id"]
            await ws.send(json.dumps({"action": "subscribe", "task_id": push["task_id"]}))
        self._connect_done(True)
        try:
            t_go = await self.go
            offset = (task.index / self.args.total) * self.args.start_window
            await asyncio.sleep(max(0.0, t_go + offset - loop.time()))
            task.t_start = time.monotonic()
            if push is None:
                await ws.send(self.start_frame)
            async with asyncio.timeout(self.args.task_timeout):
                while True:
                    frame = await ws.recv()
                    now = self.last_rx = time.monotonic()
                    data = json.loads(frame)
                    kind = classify(data)
                    if kind == "update" or kind == "complete":
                        if task.task_id is None:
                            task.task_id = data.get("task_id")
                        task.times.append(now)
                        task.progress.append(float(data.get("progress", 0)))
                        task.seqs.append(data.get("seq"))
                        if kind == "complete":
                            task.complete = True
                            break
                    elif kind == "failed":
                        task.error = f"failed: {data!r}"[:300]
                        break
        except TimeoutError:
            task.error = f"timeout after {self.args.task_timeout}s with {len(task.times)} updates"
        except Exception as exc:
            task.error = f"{exc!r}"[:300]
        finally:
            await ws.close()

    async def watchdog(self, browsers: list[asyncio.Task[None]]) -> None:
        """Give up on every unfinished task once nothing has arrived for a while.

        A stack that has stopped delivering (lost messages, dead workers) would
        otherwise hold the run until ``--task-timeout``.
        """
        limit = self.args.stall_timeout
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - self.last_rx > limit:
                for task in self.tasks:
                    if not task.complete and task.error is None:
                        task.error = f"stalled: no message on any socket for {limit:.0f}s"
                for browser in browsers:
                    browser.cancel()
                return

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        browsers = [
            asyncio.create_task(self.browser(task, t0 + i / self.args.connect_rate))
            for i, task in enumerate(self.tasks)
        ]
        if self.tasks:
            await self.all_connected.wait()
        print(f"ready {self.connected} {self.args.count - self.connected}", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        parts = line.split()
        if len(parts) != 2 or parts[0] != "go":
            raise SystemExit(f"expected 'go <time>' on stdin, got {line!r}")
        self.go.set_result(float(parts[1]))
        cpu0, wall0 = time.process_time(), time.monotonic()
        self.last_rx = max(wall0, float(parts[1]) + self.args.start_window)
        watchdog = asyncio.create_task(self.watchdog(browsers))
        await asyncio.gather(*browsers, return_exceptions=True)
        watchdog.cancel()
        self.task_cpu_s = time.process_time() - cpu0
        self.task_wall_s = time.monotonic() - wall0


def _run(main: Coroutine[Any, Any, LoadGen]) -> LoadGen:
    """Run on uvloop when it is installed (it is a dev dependency): the load
    generator shares the machine with the stack it measures, and uvloop's
    event loop costs it less CPU per received frame."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--connect-rate", type=float, required=True)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--start-window", type=float, required=True)
    parser.add_argument("--task-timeout", type=float, required=True)
    parser.add_argument("--stall-timeout", type=float, default=20.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--push-file", help="push_run.py: [{task_id, session}] per socket index")
    args = parser.parse_args()
    raise_fd_limit(args.count * 2 + 1024)
    cpu0, wall0 = time.process_time(), time.monotonic()

    async def go() -> LoadGen:
        gen = LoadGen(args)
        await gen.run()
        return gen

    gen = _run(go())
    result = {
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "task_cpu_s": gen.task_cpu_s,
        "task_wall_s": gen.task_wall_s,
        "tasks": [task.as_dict() for task in gen.tasks],
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print("done", flush=True)


if __name__ == "__main__":
    main()
