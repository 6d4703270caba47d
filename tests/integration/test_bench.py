"""The benchmark (issue 7) keeps working: a short run of two measures on
taskmasterd only, written to a temporary directory. It checks that the bench
runs and records, not how fast anything is (that is the bench's job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_quick_run_writes_a_table_and_json(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "floor,stop",
         "--daemons", "taskmasterd", "--sizes", "20", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "floor: 20 x Popen(sleep)" in r.stdout
    assert "stop precision" in r.stdout
    doc = json.loads((tmp_path / "latest.json").read_text())
    stop = doc["results"]["stop precision (stoptime 1, TERM ignored -> death)"]
    assert stop["taskmasterd"]["n"] == 3 and 900 < stop["taskmasterd"]["median"] < 2000
    assert stop["target"]["text"] == "1000 ms ± 10"
    assert "(failed)" not in r.stdout
    assert doc["machine"]["nproc"] >= 1 and doc["quick"] is True
