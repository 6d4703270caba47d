"""conf.d includes (issue 19) with the real daemon: a reload re-reads the
tree, and adding, editing or removing one file starts, restarts or stops
exactly the programs of that file — every other process keeps its PID.

Every wait is on a lifecycle log line with a timeout (tests/harness.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from tests.harness import Daemon, LogLine, alive, event
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]


def sleeper(seconds: int = 100000, **keys: object) -> dict[str, object]:
    return {"cmd": f"sleep {seconds}", "starttime": 0, **keys}


def write_file(path: Path, programs: dict[str, dict[str, object]]) -> None:
    path.write_text(yaml.safe_dump({"programs": programs}, sort_keys=False))


def touched(lines: list[LogLine], kind: str) -> set[str]:
    """The processes that logged `kind` in `lines`."""
    return {ln.process for ln in lines if ln.kind == kind}


def test_a_reload_adds_restarts_and_stops_exactly_one_files_programs(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    confd = workdir / "conf.d"
    confd.mkdir()
    files = {
        "a.yaml": {"a1": sleeper(), "a2": sleeper(numprocs=2)},
        "b.yaml": {"b1": sleeper(), "b2": sleeper()},
        "c.yaml": {"c1": sleeper()},
    }
    for name, programs in files.items():
        write_file(confd / name, programs)
    cfg = write_config({"main": sleeper()}, include=["conf.d/*.yaml"])
    d = daemons(cfg)
    everyone = {"main", "a1", "a2:0", "a2:1", "b1", "b2", "c1"}
    d.wait_count(lambda ln: ln.kind == "RUNNING", len(everyone))
    before = d.latest_pids()
    assert set(before) == everyone

    def unchanged(names: set[str]) -> None:
        now = d.latest_pids()
        for name in names:
            assert now[name] == before[name] and alive(before[name]), name

    # 1. A fourth file: exactly its programs start.
    mark = len(d.lines)
    write_file(confd / "d.yaml", {"d1": sleeper(), "d2": sleeper()})
    line = d.reload()
    assert line.kind == "RELOAD" and line.message == "reloaded; added: d1, d2", line.message
    d.wait_for(event("RUNNING", "d1"))
    d.wait_for(event("RUNNING", "d2"))
    assert touched(d.since(mark), "STARTING") == {"d1", "d2"}
    assert touched(d.since(mark), "STOPPING") == set()
    unchanged(everyone)
    before = d.latest_pids()
    everyone |= {"d1", "d2"}

    # 2. One file edited: exactly its changed program restarts (b2, in the
    # same file but unchanged, keeps running).
    mark = len(d.lines)
    write_file(confd / "b.yaml", {"b1": sleeper(100001), "b2": sleeper()})
    line = d.reload()
    assert line.message == "reloaded; restarted: b1", line.message
    d.wait_for(event("RUNNING", "b1"))
    assert touched(d.since(mark), "STARTING") == {"b1"}
    assert touched(d.since(mark), "STOPPING") == {"b1"}
    assert not alive(before["b1"])
    unchanged(everyone - {"b1"})
    before = d.latest_pids()

    # 3. One file removed: exactly its programs stop.
    mark = len(d.lines)
    (confd / "c.yaml").unlink()
    line = d.reload()
    assert line.message == "reloaded; removed: c1", line.message
    d.wait_for(event("STOPPED", "c1"))
    assert touched(d.since(mark), "STARTING") == set()
    assert touched(d.since(mark), "STOPPING") == {"c1"}
    assert not alive(before["c1"])
    unchanged(everyone - {"c1"})

    # 4. A bad included file: the reload fails naming it; nothing is touched.
    mark = len(d.lines)
    (confd / "e.yaml").write_text("programs:\n  main: {cmd: sleep 1}\n")
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED"
    assert f"{confd}/e.yaml:2:3: programs.main: program 'main' is defined twice" in d.text()
    assert [ln.kind for ln in d.since(mark)] == ["RELOAD_FAILED"]
    unchanged(everyone - {"c1"})
    assert d.terminate() == 0
