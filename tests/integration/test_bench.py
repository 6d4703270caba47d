"""The benchmark (issue 7) keeps working: a short run of two measures on
taskmasterd only, written to a temporary directory. It checks that the bench
runs and records, not how fast anything is (that is the bench's job)."""

from __future__ import annotations

import json
import shutil
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
    # The KILL waited for stoptime (load only makes it later); how exactly it
    # keeps stoptime is the state machine's, on a fake clock
    # (tests/unit/test_process.py::test_stop_sends_stopsignal_then_sigkill_after_stoptime).
    assert stop["taskmasterd"]["n"] == 3 and stop["taskmasterd"]["median"] > 900
    assert stop["target"]["text"] == "1000 ms ± 10"
    assert "(failed)" not in r.stdout
    assert doc["machine"]["nproc"] >= 1 and doc["quick"] is True


def test_bench_quick_reexec_and_readopt(tmp_path: Path) -> None:
    """Issue 13's measures at 50 programs, both daemons: every sample is
    taken, no program restarted by the re-exec, none started twice by the
    re-adoption; supervisord has no re-exec (n/a) and restarts its 50
    beside the orphans."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "reexec,readopt",
         "--sizes", "50", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(failed)" not in r.stdout, r.stdout
    res = json.loads((tmp_path / "latest.json").read_text())["results"]
    reexec_time = res["daemon-reexec time N=50 (Reexecute -> READY=1)"]
    assert reexec_time["taskmasterd"]["n"] == 2 and reexec_time["taskmasterd"]["median"] > 0
    assert reexec_time["supervisord"]["note"].startswith("n/a")
    restarts = res["daemon-reexec restarts N=50 (pid changed or spawned)"]["taskmasterd"]
    assert restarts["samples"] == [0, 0] and restarts["note"].startswith("0 STARTING")
    readopt_time = res["re-adopt time N=50 (kill -9, new daemon exec -> all RUNNING)"]
    # (a side without samples has a note saying why: "> 20 s" ...)
    assert readopt_time["taskmasterd"].get("n") == 2, readopt_time
    assert readopt_time["supervisord"].get("n") == 1, readopt_time
    copies = res["re-adopt second copies N=50 (programs running twice)"]
    assert copies["taskmasterd"]["samples"] == [0, 0]
    assert copies["taskmasterd"]["note"] == "50/50 kept their pid"
    assert copies["supervisord"]["samples"] == [50]  # its orphans run on beside the new ones
    assert copies["target"]["met"] is True


def test_bench_quick_tasks(tmp_path: Path) -> None:
    """Issue 14's measure with 30 tasks: every task submitted over D-Bus ends
    succeeded, the floor and the ratio are recorded beside it, supervisord
    is n/a. Plumbing only, no timing."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "tasks",
         "--tasks", "30", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(failed)" not in r.stdout, r.stdout
    res = json.loads((tmp_path / "latest.json").read_text())["results"]
    wall = res["tasks: 30 x `true`, max_parallel 16 (SubmitTask -> all ended)"]
    assert wall["taskmasterd"]["n"] == 1 and wall["taskmasterd"]["median"] > 0
    assert wall["taskmasterd"]["note"].startswith("30/30 succeeded"), wall
    assert wall["supervisord"]["note"].startswith("n/a")
    floor = res["tasks floor: 30 x `true` in 16 lanes (xargs -P16, no daemon)"]
    assert floor["taskmasterd"]["n"] == 1 and floor["taskmasterd"]["median"] > 0
    ratio = res["tasks: wall time / floor (30 spawns in 16 lanes, same run)"]
    assert ratio["taskmasterd"]["n"] == 1 and ratio["taskmasterd"]["median"] > 0
    assert ratio["target"]["text"] == "within 2x of the floor"
    writes = res["tasks floor: 30 x 3 durable status writes (group commits of 16), no daemon"]
    assert writes["taskmasterd"]["n"] == 1


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_bench_quick_web(tmp_path: Path) -> None:
    """Issue 17's measure with 50 programs: /metrics timed with one series
    per process, page loads with every row and state shown, each D-Bus
    signal of the stop/start cycles matched with the page's row showing its
    state; supervisord n/a. Plumbing only, no timing."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "web",
         "--web", "50", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(failed)" not in r.stdout and "(skipped)" not in r.stdout, r.stdout
    res = json.loads((tmp_path / "latest.json").read_text())["results"]
    scrape = res["web /metrics N=50 (GET, keep-alive, Prometheus's Accept: OpenMetrics)"]
    assert scrape["taskmasterd"]["n"] == 7 and "application/openmetrics-text" in \
        scrape["taskmasterd"]["note"]
    assert scrape["supervisord"]["note"].startswith("n/a")
    assert scrape["target"]["text"] == "< 50 ms"
    load = res["web page load -> first full status N=50 (logged in: DOM holds N rows)"]
    assert load["taskmasterd"]["n"] == 3 and load["taskmasterd"]["median"] > 0
    assert load["target"]["text"] == "< 1 s"
    for how in ("page idle (1 s without a refresh)",
                "back to back (the next call once the previous refresh is drawn)"):
        change = res[f"web state change -> page N=50 (D-Bus signal -> DOM row): {how}"]
        assert change["taskmasterd"]["n"] == 8, change  # 2 x (STOPPING STOPPED STARTING RUNNING)
        assert change["taskmasterd"]["note"].startswith("8/8 signals"), change
        assert change["target"]["text"] == "< 100 ms"


def test_compare_reads_two_runs_and_marks_the_direction(tmp_path: Path) -> None:
    def run(stamp: str, tm: float, sup: float, rss: float) -> Path:
        doc = {"timestamp": stamp, "quick": False, "results": {
            "mass start N=10 (launch -> all RUNNING)": {
                "unit": "s", "better": "lower",
                "taskmasterd": {"median": tm}, "supervisord": {"median": sup}},
            "output flood: bytes landed in log": {
                "unit": "MB/s", "better": "higher", "taskmasterd": {"median": rss}}}}
        path = tmp_path / f"{stamp}.json"
        path.write_text(json.dumps(doc))
        return path

    old, new = run("20260101T000000Z", 2.0, 10.0, 500.0), run("20260102T000000Z", 1.0, 10.0, 400.0)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), str(old), str(new)],
                       capture_output=True, text=True, timeout=30, check=True)
    lines = r.stdout.splitlines()
    assert any("mass start" in ln and "taskmasterd" in ln and "-50% (better)" in ln for ln in lines)
    assert any("mass start" in ln and "supervisord" in ln and "same" in ln for ln in lines)
    assert any("output flood" in ln and "-20% (worse)" in ln for ln in lines)  # higher is better
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), str(old)],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "two result files" in bad.stderr
