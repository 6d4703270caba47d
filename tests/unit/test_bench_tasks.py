"""The bench's `tasks` measure (bench/taskbench.py): its pure parts (ratio,
verdict, the end tracker, ListTasks rows), its floors on a small N, the
supervisord column, and its place in run.py's table."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402
import taskbench  # noqa: E402
from measures import MEASURES  # noqa: E402
from taskbench import EndTracker, end_from_list, paired_ratios, ratio, verdict  # noqa: E402


def test_ratio_and_verdict() -> None:
    assert ratio(3.0, 1.5) == 2.0
    assert verdict(2.0) and verdict(1.0) and verdict(0.5)
    assert not verdict(2.01)
    with pytest.raises(ValueError, match="floor must be positive"):
        ratio(1.0, 0.0)


def test_ratios_are_paired_rep_by_rep() -> None:
    assert paired_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        paired_ratios([2.0], [1.0, 2.0])  # a lost sample would shift every pair


def sig(id: str, old: str, new: str) -> list[object]:
    return [id, "true", "", old, new, 0 if new == "succeeded" else -1, ""]


def test_end_tracker_takes_ends_before_their_ids() -> None:
    """The daemon may signal a task's end before the SubmitTask reply naming
    it has been read: the end must not be lost."""
    t = EndTracker(2)
    t.on_signal(sig("aaaaaaaa", "", "queued"), 1.0)
    t.on_signal(sig("aaaaaaaa", "queued", "running"), 1.1)
    t.on_signal(sig("aaaaaaaa", "running", "succeeded"), 1.2)
    assert not t.done  # nothing submitted yet
    t.on_reply("aaaaaaaa")
    assert not t.done  # one of two
    t.on_reply("bbbbbbbb")
    assert t.pending() == 1
    t.on_signal(sig("bbbbbbbb", "running", "failed"), 1.5)
    t.on_signal(sig("bbbbbbbb", "failed", "failed"), 9.0)  # a repeat: the first end counts
    assert t.done and t.last_end() == 1.5 and t.pending() == 0
    assert t.states() == Counter({"succeeded": 1, "failed": 1})
    assert t.signals == 5


def test_end_tracker_ignores_other_tasks_ends() -> None:
    t = EndTracker(1)
    t.on_signal(sig("cccccccc", "running", "succeeded"), 5.0)  # not ours
    t.on_reply("aaaaaaaa")
    t.on_signal(sig("aaaaaaaa", "running", "lost"), 2.0)
    assert t.done and t.last_end() == 2.0 and t.states() == Counter({"lost": 1})


def row(id: str, state: str, ended_us: int) -> list[object]:
    return [id, "true", state, "", "/bin/true", 0, 0, "", "", "", 1, 1, ended_us]


def test_end_from_list_rows() -> None:
    rows = [row("aaaaaaaa", "succeeded", 2_000_000), row("bbbbbbbb", "failed", 3_500_000),
            row("cccccccc", "running", 0)]
    end, states = end_from_list(rows, {"aaaaaaaa", "bbbbbbbb"}, wall_minus_perf=1.0)
    assert end == 2.5  # 3.5 s of wall clock is 2.5 on perf_counter's
    assert states == Counter({"succeeded": 1, "failed": 1})
    end, states = end_from_list(rows, {"aaaaaaaa", "cccccccc"}, 0.0)
    assert end is None and states == Counter({"succeeded": 1, "running": 1})
    assert end_from_list(rows, {"dddddddd"}, 0.0)[0] is None  # not listed: not ended


def test_floors_on_a_small_n() -> None:
    true = shutil.which("true") or "/bin/true"
    assert taskbench.spawn_floor(20, 4, true) > 0
    assert taskbench.durable_writes_floor(sys.executable, 5, 2) > 0


def test_supervisord_column_is_na_without_a_daemon() -> None:
    class Sup:
        name = "supervisord"

        def __init__(self) -> None:
            raise AssertionError("no daemon is started for a measure that does not apply")

    opts = argparse.Namespace(tasks_n=1000, tasks_parallel=16, reps_tasks=3, tasks_timeout=120.0)
    rows = taskbench.tasks(Sup, opts)
    assert [r["samples"] for r in rows] == [[], []]
    assert rows[0]["note"].startswith("n/a (supervisord has no one-shot tasks")
    assert rows[1]["note"] == "n/a"
    assert rows[0]["measure"] == "tasks: 1000 x `true`, max_parallel 16 (SubmitTask -> all ended)"


def test_run_lists_the_measure_and_judges_the_ratio_row() -> None:
    assert MEASURES["tasks"] is taskbench.tasks
    name = "tasks: wall time / floor (1000 spawns in 16 lanes, same run)"
    found = [(text, ok) for prefix, text, ok, _ in run.TARGETS if name.startswith(prefix)]
    assert len(found) == 1
    text, ok = found[0]
    assert text == "within 2x of the floor"
    assert ok(1.9, None) and ok(2.0, None) and not ok(2.1, None)
