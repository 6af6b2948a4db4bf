"""The process supervisor behind ``progrock up``, driven with tiny real child processes."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from progrock.local import supervisor as _supervisor
from progrock.local.supervisor import ChildFailed, ChildSpec, Supervisor

PY = sys.executable


def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait until ``condition()`` is true, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def script(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


SLEEPER = script(
    """
    import sys, time
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def sup(stream: io.StringIO) -> Iterator[Supervisor]:
    supervisor = Supervisor(echo=True, stream=stream)
    yield supervisor
    supervisor.stop_all(timeout=2.0)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_supervisor, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(_supervisor, "BACKOFF_MAX", 0.1)


def test_output_is_prefixed_with_fixed_width_names(sup: Supervisor, stream: io.StringIO) -> None:
    """Each child's stdout and stderr lines are re-printed behind a padded name and a bar."""
    sup.set_width(["worker-10", "web"])
    code = 'import sys; print("out line", flush=True); print("err line", file=sys.stderr)'
    sup.add(ChildSpec("web", [PY, "-c", code], oneshot=True))
    sup.spawn("web")
    sup.wait_ready(["web"], 10)
    lines = stream.getvalue().splitlines()
    assert "web       | out line" in lines, lines
    assert "web       | err line" in lines, lines
    assert set(sup.get("web").output) == {"out line", "err line"}


def test_ready_line_is_matched_and_captured(sup: Supervisor) -> None:
    """A child is ready once a line matches its pattern, and the match is kept."""
    code = """
        import time
        time.sleep(0.2)
        print("listening on http://127.0.0.1:1234", flush=True)
        time.sleep(60)
    """
    pattern = re.compile(r"listening on (\S+)")
    sup.add(ChildSpec("backend", script(code), ready_line=pattern))
    sup.spawn("backend")
    sup.wait_ready(["backend"], 10)
    match = sup.get("backend").ready_match
    assert match is not None and match.group(1) == "http://127.0.0.1:1234"


def test_startup_failure_names_child_and_quotes_its_output(sup: Supervisor) -> None:
    """A child that exits before it is ready fails startup with its name and last lines."""
    code = 'import sys; print("boom: bad config"); sys.exit(3)'
    sup.add(ChildSpec("delay", [PY, "-c", code], ready_line=re.compile("never")))
    sup.spawn("delay")
    with pytest.raises(ChildFailed) as info:
        sup.wait_ready(["delay"], 10)
    assert info.value.name == "delay"
    assert "exited with code 3" in str(info.value)
    assert "boom: bad config" in str(info.value)


def test_readiness_timeout_fails_startup(sup: Supervisor) -> None:
    """A child that never gets ready within the timeout fails startup, naming it."""
    sup.add(ChildSpec("web", SLEEPER, ready_check=lambda: False))
    sup.spawn("web")
    with pytest.raises(ChildFailed, match=r"web: not ready after 0.3 s"):
        sup.wait_ready(["web"], 0.3)


def test_failed_oneshot_fails_startup(sup: Supervisor) -> None:
    """A one-shot child (migrate) that exits non-zero fails startup."""
    sup.add(ChildSpec("migrate", [PY, "-c", "raise SystemExit(1)"], oneshot=True))
    sup.spawn("migrate")
    with pytest.raises(ChildFailed, match="migrate: exited with code 1"):
        sup.wait_ready(["migrate"], 10)


def test_crashed_child_is_restarted_with_a_log_line(
    sup: Supervisor, stream: io.StringIO, fast_backoff: None
) -> None:
    """A supervised child that dies unexpectedly is started again, and the supervisor says so."""
    sup.add(ChildSpec("worker-1", SLEEPER, ready_line=re.compile("ready")))
    sup.spawn("worker-1")
    sup.wait_ready(["worker-1"], 10)
    sup.supervise()
    first = sup.pids()["worker-1"]
    os.kill(first, signal.SIGKILL)
    until(lambda: sup.pids().get("worker-1", first) != first, what="a new worker-1 pid")
    assert "worker-1 exited with signal SIGKILL" in stream.getvalue()
    assert "restarting worker-1" in stream.getvalue()


def test_never_gives_up_on_a_crash_looping_child(
    sup: Supervisor,
    stream: io.StringIO,
    fast_backoff: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A child that keeps crashing (its dependency is down) is restarted for as long
    as it takes, quietly after QUIET_AFTER crashes; once the dependency is back and
    the child stays up, the supervisor says so. It never gives up."""
    monkeypatch.setattr(_supervisor, "FAST_CRASH_SECONDS", 1.0)
    flag = tmp_path / "redis-is-back"
    code = f"""
        import os, sys, time
        if not os.path.exists({str(flag)!r}):
            sys.exit(2)
        time.sleep(60)
    """
    sup.add(ChildSpec("worker-1", script(code)))
    sup.spawn("worker-1")
    sup.supervise()
    quiet = "restarting it every"
    until(lambda: quiet in stream.getvalue(), 20, "the quiet-restart line")
    crashes = sup.get("worker-1").fast_crashes
    until(lambda: sup.get("worker-1").fast_crashes >= crashes + 3, 20, "more restarts")
    assert not sup.failed.is_set()
    assert stream.getvalue().count(quiet) == 1
    assert stream.getvalue().count("restarting worker-1") == _supervisor.QUIET_AFTER - 1
    flag.touch()  # the dependency is back
    until(lambda: "has stayed up" in stream.getvalue(), 20, "the child to stay up")
    assert sup.get("worker-1").alive() and not sup.failed.is_set()


def test_killed_child_stays_down_until_restart(sup: Supervisor, fast_backoff: None) -> None:
    """kill() holds a child down (no automatic restart); restart() brings it back ready."""
    sup.add(ChildSpec("delay", SLEEPER, ready_line=re.compile("ready")))
    sup.spawn("delay")
    sup.wait_ready(["delay"], 10)
    sup.supervise()
    pid = sup.pids()["delay"]
    sup.kill("delay")
    until(lambda: gone(pid), what="the killed child to die")
    time.sleep(0.5)  # several backoff periods: a restart would have happened by now
    assert "delay" not in sup.pids()
    sup.restart("delay", timeout=10)
    assert sup.pids()["delay"] != pid
    assert sup.get("delay").ready_match is not None


def test_stop_all_goes_in_reverse_start_order(
    sup: Supervisor, tmp_path: Path, stream: io.StringIO
) -> None:
    """Children are stopped group by group, last started first."""
    log = tmp_path / "order"
    code = f"""
        import signal, sys, time
        def bye(*_):
            with open({str(log)!r}, "a") as f:
                f.write(sys.argv[1] + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        while True:
            time.sleep(1)
    """
    names = [
        ("redis", ""),
        ("backend", ""),
        ("worker-1", "worker"),
        ("worker-2", "worker"),
        ("web", ""),
    ]
    for name, group in names:
        sup.add(ChildSpec(name, [*script(code), name], group=group, ready_line=re.compile("ready")))
        sup.spawn(name)
    sup.wait_ready([n for n, _ in names], 10)
    sup.stop_all()
    order = log.read_text().split()
    assert order[0] == "web"
    assert sorted(order[1:3]) == ["worker-1", "worker-2"]
    assert order[3:] == ["backend", "redis"]
    assert sup.pids() == {}


def test_stubborn_child_is_killed_after_the_timeout(sup: Supervisor, stream: io.StringIO) -> None:
    """A child that ignores SIGTERM gets SIGKILL once the stop timeout passes."""
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    sup.add(ChildSpec("web", script(code), ready_line=re.compile("ready")))
    sup.spawn("web")
    sup.wait_ready(["web"], 10)
    pid = sup.pids()["web"]
    sup.stop_all(timeout=0.3)
    assert gone(pid)
    assert "web did not stop within 0.3 s: killing it" in stream.getvalue()


def test_stop_all_leaves_no_grandchildren(sup: Supervisor) -> None:
    """Processes a child forked are stopped with it (its whole process group)."""
    code = """
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", p.pid, flush=True)
        time.sleep(60)
    """
    sup.add(ChildSpec("backend", script(code), ready_line=re.compile(r"grandchild (\d+)")))
    sup.spawn("backend")
    sup.wait_ready(["backend"], 10)
    match = sup.get("backend").ready_match
    assert match is not None
    grandchild = int(match.group(1))
    assert not gone(grandchild)
    sup.stop_all()
    until(lambda: gone(grandchild), what="the grandchild to die")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
)
def test_children_die_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """Even a SIGKILLed supervisor leaves no child behind (Linux parent-death signal)."""
    code = f"""
        import re, sys, threading
        from progrock.local.supervisor import ChildSpec, Supervisor
        sup = Supervisor(echo=False)
        sup.add(ChildSpec("web", {SLEEPER!r}, ready_line=re.compile("ready")))
        sup.spawn("web")
        sup.wait_ready(["web"], 10)
        print(sup.pids()["web"], flush=True)
        threading.Event().wait()
    """
    proc = subprocess.Popen(script(code), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert not gone(child)
    finally:
        proc.kill()
        proc.wait()
    until(lambda: gone(child), what="the orphaned child to die")


def test_unknown_child_name_is_quoted(sup: Supervisor) -> None:
    """Asking for a child that does not exist names it and lists the known ones."""
    sup.add(ChildSpec("web", SLEEPER))
    with pytest.raises(Exception, match=r"no child named 'wbe'; expected one of \['web'\]"):
        sup.kill("wbe")
