"""What the booted-systemd tests share: the example configuration's
programs, and helpers that read the unit, its processes, taskctl and the
journal in the container (tests/e2e/container.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tests.e2e.container import Background, Container, wait_until

UNIT = "taskmasterd"
CONFIG = "/etc/taskmaster/taskmaster.yaml"
VOGSPHERE = ("vogsphere:0", "vogsphere:1", "vogsphere:2")
UP = (*VOGSPHERE, "web", "crashy", "repl")  # what the example keeps RUNNING
STEADY = (*VOGSPHERE, "web", "repl")  # RUNNING and never exiting by themselves
CLEANUP = "taskmasterd-cleanup"
# The daemon as `/usr/bin/taskmasterd`: the cleanup unit's own commands name
# taskmasterd.service.
PATTERNS = ("vogsphere worker", "http.server 8042", "crashing on purpose", "python3 -i -q",
            "/usr/bin/taskmasterd")
# Everyone may read (ListProcesses) and receive the signals; a user's plain
# taskctl finds the system-wide daemon by itself (no flag).
Rows = dict[str, dict[str, Any]]


def taskctl(box: Container, *args: str, user: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return box.run(["taskctl", *args], user=user, check=False, timeout=timeout)


def status(box: Container) -> Rows:
    """`taskctl --json status` by name (exit 3 is normal here: launcher is
    FATAL and report STOPPED)."""
    proc = taskctl(box, "--json", "status")
    assert proc.returncode in (0, 3), f"taskctl status: exit {proc.returncode}: {proc.stderr}"
    return {row["name"]: row for row in json.loads(proc.stdout)}


def wait_state(box: Container, wanted: dict[str, str], timeout: float = 30, *,
               not_pids: dict[str, int] | None = None) -> Rows:
    """Wait until each process is in its state (and, for those in
    `not_pids`, has a pid other than that one); return the rows."""
    def check() -> Rows:
        rows = status(box)
        for name, state in wanted.items():
            row = rows.get(name)
            assert row is not None, f"{name} not in {sorted(rows)}"
            assert row["state"] == state, f"{name} is {row['state']}, not {state}"
            if not_pids and name in not_pids:
                assert row["pid"] not in (None, not_pids[name]), f"{name} still has pid {row['pid']}"
        return rows
    return wait_until(check, timeout, f"{wanted} (new pids for {sorted(not_pids or {})})")


def pids(rows: Rows, names: Iterable[str]) -> dict[str, int]:
    return {n: rows[n]["pid"] for n in names}


def systemctl_show(box: Container, prop: str) -> str:
    return box.run(["systemctl", "show", "-p", prop, "--value", UNIT]).stdout.strip()


def unit_pids(box: Container) -> list[int]:
    """Every process in the unit's control group (and below), whichever
    hierarchy systemd tracks it in; [] once the group is gone."""
    script = ("for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do "
              f'g="$h/system.slice/{UNIT}.service"; [ -e "$h/cgroup.procs" ] || continue; '
              '[ -d "$g" ] && find "$g" -name cgroup.procs -exec cat {} +; exit 0; done; '
              "echo no cgroup hierarchy >&2; exit 1")
    return sorted(int(p) for p in box.run(["sh", "-c", script]).stdout.split())


def alive(box: Container, pids: Iterable[int]) -> list[int]:
    """Those of `pids` that are live processes (not gone, not zombies)."""
    out = box.run(["sh", "-c", 'for p; do s=$(cut -d" " -f3 /proc/$p/stat 2>/dev/null) && '
                   '[ "$s" != Z ] && echo $p; done; true', "sh", *map(str, pids)]).stdout
    return sorted(int(p) for p in out.split())


def wait_cgroup_empty(box: Container, what: str, timeout: float = 20) -> None:
    """taskmasterd-cleanup.service runs as a job of its own once the unit has
    stopped: `systemctl stop` may return before it is done."""
    def empty() -> bool:
        left = unit_pids(box)
        assert not left, "left in the cgroup: " + box.run(
            ["ps", "-o", "pid,ppid,stat,args", "-p", ",".join(map(str, left))],
            check=False).stdout
        return True
    wait_until(empty, timeout, f"the unit's control group to be empty ({what})")


@contextlib.contextmanager
def drop_in(box: Container, text: str) -> Iterator[None]:
    """A runtime drop-in for the unit while the block runs; afterwards it is
    removed and the unit's failed state (and start-limit counter) reset."""
    path = f"/run/systemd/system/{UNIT}.service.d/50-e2e.conf"
    box.run(["mkdir", "-p", path.rsplit("/", 1)[0]])
    box.write_file(path, text)
    box.run(["systemctl", "daemon-reload"])
    try:
        yield
    finally:
        box.run(["rm", "-f", path])
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "reset-failed", UNIT], check=False)


def start_and_wait(box: Container) -> dict[str, int]:
    """Start the unit; the pids of the steady programs once all RUNNING."""
    box.run(["systemctl", "start", UNIT], timeout=60)
    return pids(wait_state(box, dict.fromkeys(STEADY, "RUNNING")), STEADY)


def cleanup_kills(box: Container, since: int) -> list[str]:
    """What the cleanup unit's `systemctl kill` made systemd kill since the mark."""
    return [str(e.get("MESSAGE")) for e in box.journal(f"UNIT={UNIT}.service", since=since)
            if "on client request" in str(e.get("MESSAGE", ""))]


def follow_events(box: Container, user: str | None = None) -> Background:
    """`taskctl --json events` in the background, returned once it is
    subscribed (it says so on stderr): subscribe before you act."""
    events = box.spawn(["taskctl", "--system", "--json", "events"], user=user)
    try:
        events.wait_for_line(lambda line: "following the events" in line, 20,
                             "taskctl's 'following the events' line")
    except BaseException:
        events.stop()
        raise
    return events


def event(match: Callable[[dict[str, Any]], bool]) -> Callable[[str], bool]:
    """A line matcher for `taskctl --json events` output."""
    def matches(line: str) -> bool:
        if not line.startswith("{"):
            return False
        return match(json.loads(line))
    return matches


def journal_entry(box: Container, what: str, *matches: str, since: int,
                  where: Callable[[dict[str, Any]], bool] = lambda e: True,
                  timeout: float = 15) -> dict[str, Any]:
    """The first journal entry since the mark with these field matches
    (journald may write it a moment after the fact)."""
    def find() -> dict[str, Any] | None:
        return next((e for e in box.journal(*matches, since=since) if where(e)), None)
    try:
        return wait_until(find, timeout, f"a journal entry {what} ({' '.join(matches)})")
    except TimeoutError as exc:
        seen = box.journal(matches[0], since=since) if matches else []
        exc.add_note(f"entries with {matches[0] if matches else '-'} since the mark:\n" + "\n".join(
            json.dumps({k: v for k, v in e.items() if k == "MESSAGE" or k.startswith("TASKMASTER_")})
            for e in seen[-20:]))
        raise


def assert_nothing_left(box: Container, program_pids: Iterable[int], what: str) -> None:
    wait_cgroup_empty(box, what)
    wait_until(lambda: not box.run(["systemctl", "list-jobs", "--no-legend", f"{CLEANUP}.service"]
                                   ).stdout.strip(), 15, "the cleanup unit's job to finish")
    assert alive(box, program_pids) == [], f"{what}: programs still alive"
    for pattern in PATTERNS:
        found = box.run(["pgrep", "-a", "-f", pattern], check=False)
        assert found.returncode == 1, f"{what}: still running ({pattern}):\n{found.stdout}"
