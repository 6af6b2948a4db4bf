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

Exit code: the first failing run's, except that "no tests ran" (5) counts as
a failure too in the first run (the second may select nothing: ``ARGS`` can
name tests that touch no database).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest(args: list[str], database: str) -> int:
    env = {**os.environ, "PROGROCK_TEST_DATABASE": database}
    command = [sys.executable, "-m", "pytest", *args]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def main() -> int:
    installer = ROOT / "scripts" / "install-browser"
    if installer.exists() and not os.environ.get("PROGROCK_SKIP_BROWSER_INSTALL"):
        # Installs Debian's chromium when missing (the browser tests skip loudly if it can't).
        subprocess.run(["bash", str(installer)], cwd=ROOT, check=False)
    args = sys.argv[1:]
    chosen = os.environ.get("PROGROCK_TEST_DATABASE", "").strip()
    databases = [chosen] if chosen else ["sqlite", "postgres"]
    codes: list[int] = []
    for i, database in enumerate(databases):
        if i:
            print(f"\n== the database tests again, on {database} ==\n", flush=True)
        code = pytest(args, database)
        if code == 5 and i == 0:
            print("pytest collected no tests: that is a failure", file=sys.stderr)
            code = 1
        codes.append(0 if code == 5 else code)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
