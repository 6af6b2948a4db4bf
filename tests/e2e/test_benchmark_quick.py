"""The benchmark harness runs end to end against the baseline stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def test_quick_baseline_writes_a_result_with_every_task_completed(tmp_path: Path) -> None:
    """`run.py --quick --targets baseline` writes JSON whose tasks all completed."""
    out = tmp_path / "quick.json"
    # One worker: two share the prog-rocker channel and channels_redis then
    # delivers some messages twice (django/channels_redis#163), which can
    # overflow a socket's channel and lose tasks; that is measured, not tested.
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--targets",
            "baseline:1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    [run] = report["runs"]
    summary = run["summary"]
    assert summary["tasks"] == 20
    assert summary["completed"] == 20, summary["errors"]
    assert summary["completion_pct"] == 100.0
    assert summary["updates"] >= 20 * 35
    assert summary["stack_cpu_s"] > 0
    assert report["tables"], "expected the printed table in the result"
