"""The bench's `console` measure (bench/consolebench.py): its pure parts
(the program's report, held up or not, the units), the program itself on a
few lines, and its place in run.py's table."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import consolebench  # noqa: E402
import run  # noqa: E402
from consolebench import Report, parse_report, pct_core, per_gb  # noqa: E402
from measures import MEASURES  # noqa: E402


def test_report_lag_and_held_up() -> None:
    r = parse_report("0.004000 9.999500 10485760\n")
    assert r == Report(0.004, 9.9995, 10 * 1024 * 1024)
    # 10240 lines at 1024/s: the last is due 10239/1024 s after the first
    assert r.lag(10240) == pytest.approx(9.9995 - 10239 / 1024)
    assert not r.held_up(10240)
    assert Report(0.6, 10.0, 1).held_up(10240)  # one write waited past 0.5 s
    assert Report(0.01, 10.6, 1).held_up(10240)  # ended 0.6 s late
    with pytest.raises(ValueError):
        parse_report("0.1 2.0")  # a half-written report is never read as whole


def test_units() -> None:
    assert per_gb(0.05, 10_000_000) == pytest.approx(5.0)
    assert pct_core(0.4, 10.0) == pytest.approx(4.0)


def test_the_program_paces_itself_and_reports(tmp_path: Path) -> None:
    lines, rate = 100, 2000.0
    cmd = consolebench.flood_cmd(tmp_path, lines, rate)
    (tmp_path / "go").touch()
    proc = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL)
    try:
        report = tmp_path / "report"
        deadline = time.monotonic() + 20
        while not report.exists():
            assert time.monotonic() < deadline, "no report"
            assert proc.poll() is None, "the program exited before reporting"
            time.sleep(0.02)  # sleep-ok: polling for the program's report, with a deadline
        r = parse_report(report.read_text())
    finally:
        proc.kill()
        proc.wait()
    assert r.moved == lines * 1024
    assert r.took >= (lines - 1) / rate  # it kept to its schedule, not faster
    assert r.slowest < r.took


def test_run_lists_the_measure_and_judges_its_rows() -> None:
    assert MEASURES["console"] is consolebench.console

    def judge(name: str) -> tuple[str, Callable[[float, float | None], bool]]:
        found = [(text, ok) for prefix, text, ok, _ in run.TARGETS if name.startswith(prefix)]
        assert len(found) == 1, name
        return found[0]

    text, ok = judge(consolebench.CPU_ROW)
    assert text == "< 10 % of a core"
    assert ok(9.9, None) and not ok(10.0, None)
    for name in (consolebench.SLOW_ROW, consolebench.LAG_ROW):
        text, ok = judge(name)
        assert text == "< 500 ms"
        assert ok(499.0, None) and not ok(500.0, None)
    for name in (consolebench.TMUX_ROW, consolebench.RATIO_ROW):
        assert not [p for p, *_ in run.TARGETS if name.startswith(p)], name
