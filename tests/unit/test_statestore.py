"""The state store: records, file format, /proc parsing, atomic file, and the
coalescing writer (on the virtual clock)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.config import Output, OutputKind, ProgramConfig
from taskmasterd.programschema import PROGRAM_TABLE, ProgramKey
from taskmasterd.states import State
from taskmasterd.statestore import ProcessRecord, Refused, Snapshot, StateStore, StoreBusy, StoreWriter
from taskmasterd.statestore.records import (
    FORMAT,
    VERSION,
    decode,
    encode,
    launch_fingerprint,
    parse_proc_stat,
)
from tests.unit.test_reload import OTHER_VALUE
from tests.virtual_clock import run


def record(**kw: object) -> ProcessRecord:
    base = ProcessRecord(program="web", process="web:1", index=1, pid=4242, start_ticks=123456,
                         fingerprint="0f" * 16, state=State.RUNNING, started_at=1764650000.25,
                         restarts=2, stopsignal=15, stoptime=10.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def prog(**kw: object) -> ProgramConfig:
    return replace(ProgramConfig(name="a", cmd="sleep 1", argv=("sleep", "1")), **kw)  # type: ignore[arg-type]


# ---- records -----------------------------------------------------------------


def test_round_trip() -> None:
    snap = Snapshot((record(), record(process="db", program="db", index=0, pid=7,
                                      state=State.STARTING)), daemon_pid=99)
    data = encode(snap)
    assert decode(data) == snap
    doc = json.loads(data)
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    assert len(data) < 600  # small: ~250 bytes a process


names = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
                min_size=1, max_size=20)


@st.composite
def records(draw: st.DrawFn) -> ProcessRecord:
    program = draw(names)
    index = draw(st.integers(0, 999))
    process = program if index == 0 and draw(st.booleans()) else f"{program}:{index}"
    return ProcessRecord(
        program=program, process=process, index=index, pid=draw(st.integers(2, 2**22)),
        start_ticks=draw(st.integers(0, 2**63)), fingerprint=draw(names),
        state=draw(st.sampled_from([State.STARTING, State.RUNNING, State.STOPPING])),
        started_at=draw(st.floats(0, 1e12)), restarts=draw(st.integers(0, 10**6)),
        stopsignal=draw(st.integers(1, 64)), stoptime=draw(st.floats(0, 86400)))


@given(st.lists(records(), max_size=5, unique_by=(lambda r: r.process, lambda r: r.pid)),
       st.integers(0, 2**22))
def test_round_trip_any(recs: list[ProcessRecord], daemon_pid: int) -> None:
    snap = Snapshot(tuple(recs), daemon_pid)
    assert decode(encode(snap)) == snap


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(data: bytes) -> None:
    assert isinstance(decode(data), Snapshot | Refused)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300)
@given(st.sampled_from(["format", "version", "daemon_pid", "processes", "extra"]), json_values,
       st.sampled_from(sorted(json.loads(encode(Snapshot((record(),))))["processes"][0])), json_values)
def test_decode_never_raises_on_mangled_files(top: str, top_value: object, key: str,
                                              value: object) -> None:
    doc = json.loads(encode(Snapshot((record(),))))
    doc["processes"][0][key] = value
    assert isinstance(decode(json.dumps(doc).encode()), Snapshot | Refused)
    doc = json.loads(encode(Snapshot((record(),))))
    doc[top] = top_value
    assert isinstance(decode(json.dumps(doc).encode()), Snapshot | Refused)


def test_every_truncation_is_refused() -> None:
    data = encode(Snapshot((record(), record(process="x", program="x", index=0, pid=9))))
    for n in range(len(data) - 1):  # minus the newline: without it the JSON is whole
        result = decode(data[:n])
        assert isinstance(result, Refused), n


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file"),
    (b"\xff\xfe{", "not UTF-8"),
    (b'{"format": "taskmaster-state", "version": 1, "daemon_pid": 1, "proc', "not valid JSON"),
    (b"[1, 2]", "not a taskmaster state file"),
    (b'{"format": "supervisord", "version": 1}', "format 'supervisord'"),
    (b'{"format": "taskmaster-state", "version": 2, "daemon_pid": 1, "processes": []}',
     "version 2: this taskmasterd reads version 1"),
    (b'{"format": "taskmaster-state", "version": true, "daemon_pid": 1, "processes": []}',
     "version True"),
    (b'[' * 100000 + b']' * 100000, "not valid JSON"),
])
def test_foreign_or_torn_files_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    result = decode(data)
    assert isinstance(result, Refused) and reason in result.reason, result


@pytest.mark.parametrize(("change", "reason"), [
    ({"process": "web:2"}, "inconsistent"),
    ({"process": "web", "index": 1}, "inconsistent"),
    ({"pid": 1}, "pid 1 is not an integer"),
    ({"pid": True}, "pid True"),
    ({"state": "FATAL"}, "state 'FATAL'"),
    ({"started_at": "NaN"}, "started_at"),
    ({"start_ticks": -1}, "start_ticks"),
    ({"stoptime": 10**400}, "stoptime"),
])
def test_inconsistent_records_are_refused(change: dict[str, object], reason: str) -> None:
    doc = json.loads(encode(Snapshot((record(),))))
    doc["processes"][0].update(change)
    result = decode(json.dumps(doc).encode())
    assert isinstance(result, Refused) and reason in result.reason, result


def test_nan_and_duplicates_are_refused() -> None:
    data = encode(Snapshot((record(),))).replace(b"1764650000.25", b"NaN")
    assert isinstance(decode(data), Refused)
    twice = json.loads(encode(Snapshot((record(),))))
    twice["processes"].append(dict(twice["processes"][0], pid=5))
    result = decode(json.dumps(twice).encode())
    assert isinstance(result, Refused) and "web:1 recorded twice" in result.reason
    doc = json.loads(encode(Snapshot((record(),))))
    del doc["processes"][0]["fingerprint"]
    result = decode(json.dumps(doc).encode())
    assert isinstance(result, Refused) and "missing fingerprint" in result.reason


# ---- /proc/PID/stat ------------------------------------------------------------

TAIL = " S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 10000 100 18446744073709551615"


@pytest.mark.parametrize("comm", ["sleep", "a b", "x) S 1 2 3", "((", ")", "", "ünï ) (", "a\nb"])
def test_proc_stat_with_hostile_comm(comm: str) -> None:
    parsed = parse_proc_stat(f"4242 ({comm}){TAIL}\n")
    assert parsed is not None
    assert (parsed.pid, parsed.comm, parsed.state, parsed.ppid, parsed.pgrp,
            parsed.start_ticks) == (4242, comm, "S", 1, 4242, 987654)


@pytest.mark.parametrize("text", ["", "4242", "4242 (x)", "x (sleep)" + TAIL,
                                  "4242 (sleep) S 1 2", "4242 (sleep) S 1 x 3 " + " 0" * 20])
def test_proc_stat_garbage_is_none(text: str) -> None:
    assert parse_proc_stat(text) is None


def test_proc_stat_of_this_process() -> None:
    parsed = parse_proc_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert parsed is not None and parsed.pid == os.getpid() and parsed.start_ticks > 0
    assert parsed.ppid == os.getppid()


@given(st.text(max_size=40))
def test_proc_stat_any_comm(comm: str) -> None:
    parsed = parse_proc_stat(f"17 ({comm}){TAIL}")
    assert parsed is not None and parsed.comm == comm and parsed.start_ticks == 987654


# ---- the launch fingerprint ------------------------------------------------------


@pytest.mark.parametrize("entry", PROGRAM_TABLE, ids=lambda k: k.name)
def test_fingerprint_changes_exactly_on_launch_keys(entry: ProgramKey) -> None:
    before = launch_fingerprint(prog(), "/var/log/t", False)
    after = launch_fingerprint(prog(**{entry.name: OTHER_VALUE[entry.name]}), "/var/log/t", False)
    assert (before != after) == entry.launch


def test_fingerprint_is_stable_and_ignores_where_a_value_was_written() -> None:
    a = prog(stdout=Output(OutputKind.FILE, "/tmp/o", line=3, column=9))
    b = prog(stdout=Output(OutputKind.FILE, "/tmp/o", line=30, column=1))
    assert launch_fingerprint(a, None, False) == launch_fingerprint(b, None, False)
    # the same in another interpreter (hash randomisation must not reach it)
    code = ("from tests.unit.test_statestore import prog; from taskmasterd.statestore.records "
            "import launch_fingerprint as f; print(f(prog(), '/l', False))")
    other = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "7"},
                           capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert other.stdout.strip() == launch_fingerprint(prog(), "/l", False)


def test_fingerprint_follows_where_auto_output_goes() -> None:
    auto, files = prog(), prog(stdout=Output(OutputKind.NULL), stderr=Output(OutputKind.NULL))
    assert launch_fingerprint(auto, "/l1", False) != launch_fingerprint(auto, "/l2", False)
    assert launch_fingerprint(auto, "/l1", False) != launch_fingerprint(auto, "/l1", True)
    assert launch_fingerprint(files, "/l1", False) == launch_fingerprint(files, "/l2", True)


# ---- the file ------------------------------------------------------------------------


def test_save_load_modes_and_no_leftovers(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state"))
    assert store.load() == Snapshot()  # no file: nothing recorded
    snap = Snapshot((record(),), daemon_pid=5)
    store.save(snap)
    store.save(snap)
    assert store.load() == snap
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert os.listdir(tmp_path / "state") == ["processes.json"]
    store.remove()
    store.remove()
    assert store.load() == Snapshot()
    (tmp_path / "state" / ".processes.json.x1y2.tmp").write_bytes(b"{")  # a write cut by a crash
    assert store.load() == Snapshot() and os.listdir(tmp_path / "state") == []


def test_a_refused_file_is_logged_and_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(str(tmp_path))
    Path(store.path).write_bytes(encode(Snapshot((record(),)))[:40])
    result = store.load()
    assert isinstance(result, Refused)
    assert Path(store.path + ".bad").read_bytes() == encode(Snapshot((record(),)))[:40]
    assert not os.path.exists(store.path)
    assert f"state store {store.path} refused: not valid JSON" in caplog.text
    assert f"kept as {store.path}.bad" in caplog.text
    assert store.load() == Snapshot()


def test_a_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(str(tmp_path))
    old = Snapshot((record(),))
    store.save(old)

    def no_room(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(OSError):
        store.save(Snapshot())
    monkeypatch.undo()
    assert store.load() == old
    assert os.listdir(tmp_path) == ["processes.json"]  # the temporary file is gone


def test_a_store_not_durable_writes_atomically_without_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's processes.json: a temporary file and a rename, no fsync
    (a disk slow to flush must not keep a new process out of the file)."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    durable, quick = StateStore(str(tmp_path / "a")), StateStore(str(tmp_path / "b"), durable=False)
    snap = Snapshot((record(),), daemon_pid=5)
    durable.save(snap)
    assert len(synced) == 2  # the file, then its directory
    synced.clear()
    quick.save(snap)
    quick.save(Snapshot((record(pid=77),)))
    assert synced == []
    assert quick.load() == Snapshot((record(pid=77),))
    assert os.listdir(tmp_path / "b") == ["processes.json"]  # renamed, no temporary file left
    assert stat.S_IMODE(os.stat(quick.path).st_mode) == 0o600
    quick.remove()
    assert synced == [] and quick.load() == Snapshot()


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    a, b = StateStore(str(tmp_path)), StateStore(str(tmp_path))
    a.lock()
    with pytest.raises(StoreBusy):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()


# ---- the writer ---------------------------------------------------------------------------


class CountingStore(StateStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.saved: list[bytes] = []

    def save_bytes(self, data: bytes) -> None:
        self.saved.append(data)
        super().save_bytes(data)


def test_many_changes_in_one_turn_are_one_write(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path))
    current = [Snapshot()]

    async def main() -> None:
        writer = StoreWriter(store, lambda: current[0])
        for i in range(1000):
            current[0] = Snapshot((record(pid=100 + i),))
            writer.changed()
        await writer.drain()
        assert len(store.saved) == 1 and decode(store.saved[0]) == Snapshot((record(pid=1099),))
        writer.changed()  # nothing changed since: no write
        await writer.drain()
        assert len(store.saved) == 1
        loop = asyncio.get_running_loop()
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
        await asyncio.sleep(3600)  # sleep-ok: virtual clock; an hour idle: no write, no wake-up needed
        assert len(store.saved) == 1 and loop.time() == 3600
        await writer.close(clean=True)
        writer.changed()
        assert not os.path.exists(store.path)
    run(main())
    assert len(store.saved) == 1


class FailingStore(StateStore):
    failing = True

    def save_bytes(self, data: bytes) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        super().save_bytes(data)


def test_a_failing_write_is_logged_once_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FailingStore(str(tmp_path))
    current = [Snapshot((record(),))]

    async def main() -> None:
        writer = StoreWriter(store, lambda: current[0])
        for pid in (10, 11):
            current[0] = Snapshot((record(pid=pid),))
            writer.changed()
            await writer.drain()
        store.failing = False
        writer.changed()  # the same snapshot as the failed one: written now
        await writer.drain()
        assert writer.writes == 1
    run(main())
    assert caplog.text.count("state store: cannot write") == 1
    assert "No space left on device" in caplog.text
    assert caplog.text.count("is written again") == 1
    assert store.load() == Snapshot((record(pid=11),))


def test_a_change_during_a_write_is_written_after_it(tmp_path: Path) -> None:
    import threading
    gate = threading.Event()

    class SlowStore(CountingStore):
        def save_bytes(self, data: bytes) -> None:
            gate.wait(10)
            super().save_bytes(data)
    store = SlowStore(str(tmp_path))
    current = [Snapshot((record(pid=10),))]

    async def main() -> None:
        writer = StoreWriter(store, lambda: current[0])
        writer.changed()
        await asyncio.sleep(0)  # sleep-ok: one loop turn; the first write is under way (blocked)
        for pid in (11, 12, 13):
            current[0] = Snapshot((record(pid=pid),))
            writer.changed()
            await asyncio.sleep(0)  # sleep-ok: one loop turn
        assert store.saved == []
        gate.set()
        await writer.drain()
    run(main())
    assert [decode(d) for d in store.saved] == [Snapshot((record(pid=10),)), Snapshot((record(pid=13),))]
    assert store.load() == Snapshot((record(pid=13),))


def test_an_upgrade_keeps_the_fingerprints_of_programs_without_the_later_keys() -> None:
    """Fingerprints recorded by taskmasterd before console/redirect_stderr
    existed (computed then, pinned here): the same programs have the same
    fingerprint now, so an upgraded daemon re-adopts them instead of
    restarting every program once; a program that sets a later key differs."""
    from dataclasses import replace as with_

    from taskmasterd.config import parse_config

    config = parse_config("programs:\n"
                          "  web: {cmd: \"sleep 100\", numprocs: 2, env: {A: \"1\"}, stdout: /tmp/w.out}\n"
                          "  auto: {cmd: \"sleep 100\", workingdir: /tmp, umask: \"022\"}\n",
                          "/etc/taskmaster/taskmaster.yaml")
    web, auto = config.programs
    assert launch_fingerprint(web, "/var/log/taskmaster", False) == "4aa32e8296d904c835d62ba76506aa83"
    assert launch_fingerprint(web, "/var/log/taskmaster", True) == "a303b5015f1fbdfeedd604b076d628b9"
    assert launch_fingerprint(auto, "/var/log/taskmaster", False) == "9997dd242a414091d3b60727f45a7efc"
    assert launch_fingerprint(auto, "/var/log/taskmaster", True) == "2e37b62a531b758f61776154ee1da2bf"
    prints = {launch_fingerprint(with_(web, **change), "/var/log/taskmaster", False)
              for change in ({}, {"console": True}, {"redirect_stderr": True},
                             {"console_scrollback": 1}, {"console": True, "console_scrollback": 1})}
    assert len(prints) == 5
