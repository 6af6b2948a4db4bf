"""Run the whole test suite the way CI does: browser installed if possible, then pytest.

Used by ``make test``. pytest runs twice: every test on SQLite, then the
tests that touch the database (marker ``database``) again on a private
PostgreSQL server (``PROGROCK_TEST_DATABASE=postgres``; they skip, saying
why, where PostgreSQL is not installed). Set ``PROGROCK_TEST_DATABASE`` to
``sqlite`` or ``postgres`` for that run alone.

The several-hosts test (``tests/hosts``, marker ``hosts``) runs in the
first run: it puts each host in a network namespace of its own, so it needs
root and ``ip`` (it skips, saying why, without them), and it brings its own
PostgreSQL whatever the run's database.

With ``PROGROCK_TEST_PARALLEL=1`` (CI sets it) the PostgreSQL run goes
alongside the SQLite run instead of after it, its output printed when both
are done: the SQLite run keeps about one core of two busy (most of its time
is real processes and browsers at work), so the two together take little
more than the SQLite run alone.

Exit code: the first failing run's, except that "no tests ran" (5) counts as
a failure too in the first run (the second may select nothing: ``ARGS`` can
name tests that touch no database).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_for(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def env_for(database: str) -> dict[str, str]:
    return {**os.environ, "PROGROCK_TEST_DATABASE": database}


def pytest(args: list[str], database: str) -> int:
    done = subprocess.run(command_for(args), cwd=ROOT, env=env_for(database), check=False)
    return done.returncode


def side_by_side(args: list[str], databases: list[str]) -> list[int]:
    """The first database's run in the foreground, the others alongside (output kept)."""
    logs = [tempfile.TemporaryFile() for _ in databases[1:]]  # noqa: SIM115 - closed below
    others = [
        subprocess.Popen(
            command_for(args), cwd=ROOT, env=env_for(db), stdout=log, stderr=subprocess.STDOUT
        )
        for db, log in zip(databases[1:], logs, strict=True)
    ]
    codes = [pytest(args, databases[0])]
    for database, process, log in zip(databases[1:], others, logs, strict=True):
        codes.append(process.wait())
        print(f"\n== the database tests again, on {database} (run alongside) ==\n", flush=True)
        log.seek(0)
        sys.stdout.buffer.write(log.read())
        sys.stdout.flush()
        log.close()
    return codes


def main() -> int:
    installer = ROOT / "scripts" / "install-browser"
    if installer.exists() and not os.environ.get("PROGROCK_SKIP_BROWSER_INSTALL"):
        # Installs Debian's chromium when missing (the browser tests skip loudly if it can't).
        subprocess.run(["bash", str(installer)], cwd=ROOT, check=False)
    args = sys.argv[1:]
    chosen = os.environ.get("PROGROCK_TEST_DATABASE", "").strip()
    databases = [chosen] if chosen else ["sqlite", "postgres"]
    if os.environ.get("PROGROCK_TEST_PARALLEL") == "1" and len(databases) > 1:
        raw = side_by_side(args, databases)
    else:
        raw = []
        for i, database in enumerate(databases):
            if i:
                print(f"\n== the database tests again, on {database} ==\n", flush=True)
            raw.append(pytest(args, database))
    codes: list[int] = []
    for i, code in enumerate(raw):
        if code == 5 and i == 0:
            print("pytest collected no tests: that is a failure", file=sys.stderr)
            code = 1
        codes.append(0 if code == 5 else code)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
