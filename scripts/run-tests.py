"""Run the whole test suite the way CI does: browser installed if possible, then pytest.

Used by ``make test``. Exit code is pytest's, except that "no tests ran" (5)
counts as a failure too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    installer = ROOT / "scripts" / "install-browser"
    if installer.exists() and not os.environ.get("PROGROCK_SKIP_BROWSER_INSTALL"):
        # Installs Debian's chromium when missing (the browser tests skip loudly if it can't).
        subprocess.run(["bash", str(installer)], cwd=ROOT, check=False)
    args = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    code = subprocess.run(args, cwd=ROOT, check=False).returncode
    if code == 5:
        print("pytest collected no tests: that is a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
