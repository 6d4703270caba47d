"""`redirect_stderr: true` with the real daemon (issue 19): a program writing
to both streams ends up with both in its stdout file, in the order written —
unbounded (the same fd), bounded (one pipe to the log writer) and across
rotations —; with `stdout: null` both are discarded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
LINES = 400
# Each line to the other stream than the one before: any reordering between
# the streams shows. `exec 2>&1` is NOT used: the daemon must do it.
BOTH = f"sh -c 'i=1; while [ $i -le {LINES} ]; do echo out $i; i=$((i+1)); " \
       f"echo err $i >&2; i=$((i+1)); done; echo done'"
WANT = [f"{'out' if i % 2 else 'err'} {i}" for i in range(1, LINES + 1)] + ["done"]


def program(**kw: object) -> dict[str, object]:
    return {"cmd": BOTH, "redirect_stderr": True, "autorestart": False, "starttime": 0, **kw}


def lines_of(base: Path, backups: int = 0) -> list[str]:
    """FILE.N ... FILE.1, FILE (oldest first), as lines (a line cut in two by a
    rotation is joined again)."""
    data = b"".join(Path(f"{base}.{i}").read_bytes() for i in range(backups, 0, -1)
                    if Path(f"{base}.{i}").exists())
    return (data + base.read_bytes()).decode().splitlines()


def ends_with(path: Path, tail: bytes) -> Callable[[], bool]:
    return lambda: path.exists() and path.read_bytes().endswith(tail)


def run_to_the_end(daemons: Start, cfg: Path, name: str) -> Daemon:
    d = daemons(cfg)
    d.wait_for(event("EXITED", name))
    return d


def test_both_streams_in_the_stdout_file_in_order(write_config: WriteConfig, daemons: Start,
                                                  workdir: Path) -> None:
    cfg = write_config({
        "plain": program(stdout=str(workdir / "plain.out"), stdout_maxbytes=0),
        "bounded": program(stdout=str(workdir / "bounded.out")),
        "auto": program(),
    })
    d = daemons(cfg)
    d.wait_count(event("EXITED"), 3)
    auto = workdir / "logs" / "auto.stdout.log"
    for out in (workdir / "plain.out", workdir / "bounded.out", auto):
        # (the log writer drains the pipe of a bounded file after the exit)
        wait_until(f"the last line in {out}", ends_with(out, b"done\n"))
        assert lines_of(out) == WANT, out
    # no stderr file anywhere: not an automatic one, not an empty one
    assert sorted(p.name for p in (workdir / "logs").iterdir() if p.suffix == ".log"
                  and p.name != "taskmasterd.log") == ["auto.stdout.log"]
    assert d.terminate() == 0


def test_one_descriptor_for_both_streams(write_config: WriteConfig, daemons: Start,
                                         workdir: Path) -> None:
    cfg = write_config({
        "plain": {"cmd": "sleep 100000", "redirect_stderr": True, "starttime": 0,
                  "stdout": str(workdir / "plain.out"), "stdout_maxbytes": 0},
        "bounded": {"cmd": "sleep 100000", "redirect_stderr": True, "starttime": 0,
                    "stdout": str(workdir / "bounded.out")},
        "gone": {"cmd": "sleep 100000", "redirect_stderr": True, "starttime": 0, "stdout": None},
    })
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 3)
    pids = d.latest_pids()
    assert os.readlink(f"/proc/{pids['plain']}/fd/2") == str(workdir / "plain.out")
    pipe = os.readlink(f"/proc/{pids['bounded']}/fd/1")
    assert pipe.startswith("pipe:") and os.readlink(f"/proc/{pids['bounded']}/fd/2") == pipe
    assert os.readlink(f"/proc/{pids['gone']}/fd/1") == os.readlink(
        f"/proc/{pids['gone']}/fd/2") == "/dev/null"
    assert d.terminate() == 0


def test_rotation_keeps_both_streams_in_order(write_config: WriteConfig, daemons: Start,
                                              workdir: Path) -> None:
    out = workdir / "rot.out"
    backups = 40
    cfg = write_config({"rot": program(stdout=str(out), stdout_maxbytes="1KB",
                                       stdout_backups=backups)})
    d = run_to_the_end(daemons, cfg, "rot")
    wait_until("the last line", ends_with(out, b"done\n"))
    assert Path(f"{out}.1").exists()  # it did rotate (about 4 KB written)
    assert not Path(f"{out}.{backups}").exists()  # and nothing was dropped off the end
    assert lines_of(out, backups) == WANT
    for i in range(1, backups):
        rotated = Path(f"{out}.{i}")
        if rotated.exists():
            assert rotated.stat().st_size <= 1024
    assert d.terminate() == 0


def test_null_discards_both(write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"quiet": program(stdout=None)})
    d = run_to_the_end(daemons, cfg, "quiet")
    logs = workdir / "logs"
    leftovers = [p.name for p in logs.iterdir()] if logs.exists() else []
    assert [n for n in leftovers if n.startswith("quiet")] == []
    assert d.terminate() == 0
