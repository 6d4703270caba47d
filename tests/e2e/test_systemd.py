"""taskmasterd as Debian installs it, under a real systemd (SPEC §5, §6, §8).

One container is booted for the run (conftest.booted, shared with
test_upgrade.py) and the tests run in order, each on the state the previous
one left: start → control and policy → signals →
crash and journal → reload → stop. The configuration is the example the
package installs as /etc/taskmaster/taskmaster.yaml: vogsphere (3 processes),
web, crashy (exits every 20 s), launcher (cannot start: FATAL), report (not
autostarted).

Then the unit's KillMode=process and its cleanup (taskmasterd-cleanup.service,
started by OnSuccess=/OnFailure=): a daemon that ignores SIGTERM, a stop
during the restart delay, the start limit, a kill -9 of the daemon (the
programs survive it), and the stop after that: each leaves the unit's
control group empty.

Every wait retries a check until a deadline or reads output as it comes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.helpers import (
    CLEANUP,
    CONFIG,
    PATTERNS,
    STEADY,
    UNIT,
    UP,
    VOGSPHERE,
    alive,
    assert_nothing_left,
    cleanup_kills,
    drop_in,
    event,
    follow_events,
    journal_entry,
    pids,
    start_and_wait,
    status,
    systemctl_show,
    taskctl,
    unit_pids,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# -- the tests, in order -------------------------------------------------------

def test_start_is_ready_with_a_status_line(booted: Container) -> None:
    box = booted
    assert systemctl_show(box, "Type") == "notify"
    # Type=notify: `systemctl start` returns once the daemon said READY=1.
    try:
        box.run(["systemctl", "start", UNIT], timeout=60)
    except TimeoutError as exc:
        state = box.run(["systemctl", "status", "--no-pager", "-n", "20", UNIT], check=False)
        pytest.fail(f"{exc}\nno READY=1 from the daemon? systemctl status:\n{state.stdout}")
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"

    # Every state of the example within a minute (launcher: two retries, then FATAL).
    wait_state(box, {**dict.fromkeys(UP, "RUNNING"), "launcher": "FATAL", "report": "STOPPED"})

    # STATUS= carries a one-line summary such as "5 running, 1 fatal".
    def status_text() -> str:
        text = systemctl_show(box, "StatusText")
        assert re.search(r"\b\d+ running\b", text), f"StatusText={text!r}"
        return text
    wait_until(status_text, 15, "StatusText with 'N running' (sd_notify STATUS=)")


def test_readiness_under_systemd_and_no_notify_socket_leaks(booted: Container) -> None:
    """web has `ready: {tcp: ...}` and `health: {http: ...}` in the example:
    it is RUNNING and its check shows on D-Bus (Program.Readiness, 1.3).
    The daemon runs with systemd's NOTIFY_SOCKET (Type=notify); a program
    must never get it (its sd_notify would speak to systemd as the daemon)."""
    box = booted
    rows = wait_state(box, {"web": "RUNNING"})
    web_env = box.run(["cat", f"/proc/{rows['web']['pid']}/environ"]).stdout.split("\0")
    daemon = systemctl_show(box, "MainPID")
    daemon_env = box.run(["cat", f"/proc/{daemon}/environ"]).stdout.split("\0")
    assert any(v.startswith("NOTIFY_SOCKET=") for v in daemon_env), daemon_env
    assert not any(v.startswith(("NOTIFY_SOCKET=", "WATCHDOG_")) for v in web_env), web_env
    out = box.run(["busctl", "get-property", "org.taskmaster.Taskmaster1",
                   "/org/taskmaster/Taskmaster1/program/web", "org.taskmaster.Taskmaster1.Program",
                   "Readiness"]).stdout
    assert out.startswith('a(sssssu) 1 "web" "tcp 127.0.0.1:8042" ""'), out
    assert '"unknown"' in out or '"healthy"' in out, out  # its first check comes after 30 s


def test_restart_and_the_bus_policy(booted: Container) -> None:
    box = booted
    before = pids(wait_state(box, dict.fromkeys(VOGSPHERE, "RUNNING")), VOGSPHERE)

    proc = taskctl(box, "restart", "vogsphere")
    assert proc.returncode == 0, proc.stderr
    assert sorted(re.findall(r"vogsphere:\d", proc.stdout)) == list(VOGSPHERE), proc.stdout
    after = pids(wait_state(box, dict.fromkeys(VOGSPHERE, "RUNNING"), not_pids=before), VOGSPHERE)
    assert not set(after.values()) & set(before.values())

    # status as root and as an unprivileged user: the same table, exit 3
    # (launcher FATAL, report STOPPED are "not running").
    for user in (None, "nobody"):
        proc = taskctl(box, "status", user=user)
        who = user or "root"
        assert proc.returncode == 3, f"as {who}: exit {proc.returncode}: {proc.stderr}"
        table = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
        assert proc.stdout.split()[:4] == ["NAME", "STATE", "PID", "DESCRIPTION"], proc.stdout
        for name in VOGSPHERE:
            assert table[name][1:3] == ["RUNNING", str(after[name])], f"as {who}:\n{proc.stdout}"
        assert table["web"][1] == "RUNNING", f"as {who}:\n{proc.stdout}"
        assert table["launcher"][1] == "FATAL", f"as {who}:\n{proc.stdout}"
        assert table["report"][1] == "STOPPED", f"as {who}:\n{proc.stdout}"
        assert "crashy" in table, f"as {who}:\n{proc.stdout}"

    # Control is for root and the group taskmaster only (the bus policy).
    proc = taskctl(box, "restart", "vogsphere", user="nobody")
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert re.search(r"access.?denied", proc.stderr, re.I), proc.stderr
    assert pids(status(box), VOGSPHERE) == after


CONSOLE_CLIENT = """
import os, select, socket, sys
from taskctl.client import Client
c = Client()
terminal = c.call_fd("OpenConsole", "s", ["repl"])
output = socket.socket(fileno=c.call_fd("WatchConsole", "s", ["repl"]))
os.write(terminal, b"import os; print('tty', os.ttyname(0), os.getsid(0) == os.getpid(), 6*7)\\r")
got = b""
while b"True 42" not in got:
    if not select.select([output], [], [], 20)[0]:
        sys.exit("no answer: " + repr(got[-300:]))
    chunk = output.recv(65536)
    if not chunk:
        sys.exit("the console closed: " + repr(got))
    got += chunk
print(got.decode(errors="replace"))
"""


def test_a_console_program_under_systemd(booted: Container) -> None:
    """The example's repl (console: true) on Debian's python3 and the
    installed package: its terminal and output over the system bus, fd
    passing through the real dbus-daemon; the packaged policy keeps others out."""
    box = booted
    wait_state(box, {"repl": "RUNNING"})
    proc = box.run(["python3", "-c", CONSOLE_CLIENT], check=False, timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert re.search(r"tty /dev/pts/\d+ True 42", proc.stdout), proc.stdout
    # Recorded in logdir (not the journal, even under journald).
    log = box.run(["cat", "/var/log/taskmaster/repl.stdout.log"]).stdout
    assert "True 42" in log, log[-500:]
    denied = taskctl(box, "attach", "repl", user="nobody")
    assert denied.returncode == 1 and re.search(r"access.?denied", denied.stderr, re.I), denied


def test_the_configuration_is_for_root_and_the_group_taskmaster(booted: Container) -> None:
    """It may hold credentials: 0640 root:taskmaster as installed (postinst)."""
    box = booted
    assert box.run(["stat", "-c", "%a %U %G", CONFIG]).stdout.split() == ["640", "root", "taskmaster"]
    confd = "/etc/taskmaster/conf.d"  # its files may hold credentials: root and the group only
    assert box.run(["stat", "-c", "%a %U %G", confd]).stdout.split() == ["750", "root", "taskmaster"]
    gid = box.run(["getent", "group", "taskmaster"]).stdout.split(":")[2]
    member = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups"]
    outsider = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert "programs:" in box.run([*member, "cat", CONFIG]).stdout
    denied = box.run([*outsider, "cat", CONFIG], check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    # The state directory (future task and state files hold environments):
    # StateDirectoryMode=0700, made by systemd when the unit starts.
    assert box.run(["stat", "-c", "%a %U", "/var/lib/taskmaster"]).stdout.split() == ["700", "root"]


def test_logrotate_postrotate_reopens_the_log_and_spares_the_programs(booted: Container) -> None:
    """The package's postrotate command (SIGUSR2 to the daemon only) after a move of the log."""
    box = booted
    steady = [n for n in UP if n != "crashy"]  # crashy exits every 20 s by itself
    before = pids(wait_state(box, dict.fromkeys(steady, "RUNNING")), steady)
    daemon = systemctl_show(box, "MainPID")
    conf = box.read_file("/etc/logrotate.d/taskmasterd")
    script = conf[conf.index("postrotate") + len("postrotate"):conf.index("endscript")]
    log = "/var/log/taskmaster/taskmasterd.log"
    box.run(["mv", log, f"{log}.1"])
    box.run(["sh", "-ec", script])

    def reopened() -> str:
        text = box.run(["cat", log], check=False).stdout
        assert "SIGUSR2: reopened the log file" in text, text
        return text
    wait_until(reopened, 15, f"the daemon to reopen {log}")
    assert systemctl_show(box, "MainPID") == daemon
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    assert pids(status(box), steady) == before  # no program got the signal


def test_a_subscriber_sees_process_state_changes(booted: Container) -> None:
    box = booted
    old = wait_state(box, {"web": "RUNNING"})["web"]["pid"]
    # An unprivileged subscriber: everyone may receive the signals.
    with follow_events(box, user="nobody") as events:
        proc = taskctl(box, "restart", "web")
        assert proc.returncode == 0, proc.stderr
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["new"] != "RUNNING":
            line = events.wait_for_line(
                event(lambda e: e["event"] == "ProcessStateChanged" and e["process"] == "web"),
                20, "a ProcessStateChanged of web")
            seen.append(json.loads(line))
    assert [e["new"] for e in seen] == ["STOPPING", "STOPPED", "STARTING", "RUNNING"], seen
    assert seen[-1]["program"] == "web"
    assert seen[-1]["pid"] not in (None, old)
    assert wait_state(box, {"web": "RUNNING"})["web"]["pid"] == seen[-1]["pid"]


def test_a_killed_program_restarts_and_the_journal_says_why(booted: Container) -> None:
    box = booted
    old = wait_state(box, {"web": "RUNNING"})["web"]["pid"]
    since = box.journal_mark()
    box.run(["kill", "-9", str(old)])
    new = wait_state(box, {"web": "RUNNING"}, not_pids={"web": old})["web"]["pid"]

    exited = journal_entry(box, "for web's death by SIGKILL", "TASKMASTER_PROGRAM=web",
                           "TASKMASTER_EVENT=EXITED", since=since)
    assert exited.get("TASKMASTER_EXIT_STATUS") == "-9", exited
    assert exited.get("TASKMASTER_PID") == str(old), exited
    assert exited.get("TASKMASTER_PROCESS") == "web", exited
    assert re.fullmatch(r"[0-9a-f]{32}", exited.get("MESSAGE_ID", "")), exited
    assert exited.get("_SYSTEMD_UNIT") == f"{UNIT}.service", exited

    running = journal_entry(box, "for web's new process", "TASKMASTER_PROGRAM=web",
                            "TASKMASTER_EVENT=RUNNING", since=since,
                            where=lambda e: e.get("TASKMASTER_PID") == str(new))
    # One stable MESSAGE_ID per kind of event.
    assert re.fullmatch(r"[0-9a-f]{32}", running.get("MESSAGE_ID", "")), running
    assert running["MESSAGE_ID"] != exited["MESSAGE_ID"]

    # taskctl history reads it back from the journal (old states included);
    # a user outside systemd-journal/adm is told how to get access.
    proc = taskctl(box, "history", "--json", "--since", "1h", "web")
    assert proc.returncode == 0, proc.stderr
    timeline = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"old": "RUNNING", "new": "EXITED", "pid": old, "exit_status": -9} in [
        {k: e[k] for k in ("old", "new", "pid", "exit_status")} for e in timeline], timeline
    proc = taskctl(box, "history", "web", user="nobody")
    assert proc.returncode == 1 and "systemd-journal" in proc.stderr, proc.stderr


def test_program_output_goes_straight_to_the_journal(booted: Container) -> None:
    """Automatic output under journald: each process writes into a journal
    stream of its own (identifier = program name). A stream entry
    (_TRANSPORT=stdout) is what the child wrote itself; a copy made by the
    daemon would arrive through the journal API instead."""
    box = booted
    wait_state(box, dict.fromkeys(VOGSPHERE, "RUNNING"))
    since = box.journal_mark()
    line = journal_entry(box, "with a vogsphere worker's own output", "SYSLOG_IDENTIFIER=vogsphere",
                         since=since, where=lambda e: "job" in e.get("MESSAGE", ""))
    assert line.get("_TRANSPORT") == "stdout", line
    assert re.fullmatch(r"vogsphere worker [0-2]: job \d+ done", line["MESSAGE"]), line
    assert line.get("PRIORITY") == "6", line
    # OpenLog says NotAFile for it; taskctl tail falls back to journalctl.
    tail = taskctl(box, "tail", "vogsphere:0")
    assert tail.returncode == 0 and "vogsphere worker" in tail.stdout, (tail.stdout, tail.stderr)


def test_reload_restarts_only_the_changed_program(booted: Container) -> None:
    box = booted
    before = pids(wait_state(box, dict.fromkeys(UP, "RUNNING")), UP)
    config = box.read_file(CONFIG)
    assert config.count("sleep 20") == 1, "the example's crashy no longer says `sleep 20`"
    box.write_file(CONFIG, config.replace("sleep 20", "sleep 21"), mode=0o640)
    since = box.journal_mark()

    with follow_events(box) as events:
        # ExecReload sends SIGHUP and returns: the reload itself comes after.
        box.run(["systemctl", "reload", UNIT])
        line = events.wait_for_line(event(lambda e: e["event"] == "Reloaded"), 20,
                                    "the Reloaded signal")
    reloaded = json.loads(line)
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == ([], ["crashy"], []), line

    def crashy_runs_the_new_command() -> dict[str, Any]:
        row = status(box)["crashy"]
        assert row["state"] == "RUNNING" and row["pid"], row
        cmdline = box.run(["cat", f"/proc/{row['pid']}/cmdline"], check=False).stdout
        assert "sleep 21" in cmdline, f"crashy pid {row['pid']}: {cmdline!r}"
        return row
    crashy = wait_until(crashy_runs_the_new_command, 20, "crashy RUNNING `sleep 21`")
    assert crashy["pid"] != before["crashy"]

    after = pids(status(box), UP)
    unchanged = [n for n in UP if n != "crashy"]
    assert {n: after[n] for n in unchanged} == {n: before[n] for n in unchanged}
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    reload = journal_entry(box, "for the reload", "TASKMASTER_EVENT=RELOAD", since=since)
    assert reload.get("TASKMASTER_CHANGED") == "crashy", reload


def test_stop_leaves_nothing_behind(booted: Container) -> None:
    box = booted
    rows = status(box)
    running = [row["pid"] for row in rows.values() if row["pid"]]
    assert len(running) >= len(UP), rows
    since = box.journal_mark()

    box.run(["systemctl", "stop", UNIT], timeout=60)
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
    assert systemctl_show(box, "Result") == "success"

    for pattern in PATTERNS:
        found = box.run(["pgrep", "-a", "-f", pattern], check=False)
        assert found.returncode == 1, f"still running ({pattern}):\n{found.stdout}"
    alive = box.run(["sh", "-c", 'for p; do [ -e /proc/$p ] && echo $p; done; true', "sh",
                     *map(str, running)]).stdout.split()
    assert not alive, f"processes of the programs still alive: {alive}"
    # The daemon stopped them itself: systemd had nothing left to kill.
    killed = [e.get("MESSAGE", "") for e in box.journal(f"UNIT={UNIT}.service", since=since)
              if "Killing process" in str(e.get("MESSAGE", ""))]
    assert not killed, killed
    assert unit_pids(box) == []


# -- KillMode=process and taskmasterd-cleanup.service -------------------------

CRASH: dict[str, Any] = {}  # what test_a_crashed_daemon... leaves to the next two


def test_a_daemon_that_ignores_sigterm_is_killed_and_its_programs_too(booted: Container) -> None:
    """The daemon never sees the stop signal (KillSignal=SIGWINCH, which it
    ignores: a hung daemon), TimeoutStopSec= runs out, systemd SIGKILLs the
    daemon only (KillMode=process); the cleanup unit kills the programs."""
    box = booted
    with drop_in(box, "[Service]\nKillSignal=SIGWINCH\nTimeoutStopSec=2s\n"):
        programs = start_and_wait(box)
        since = box.journal_mark()
        box.run(["systemctl", "stop", UNIT], check=False, timeout=60)
        assert systemctl_show(box, "Result") == "timeout"
        assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "failed"
        assert_nothing_left(box, programs.values(), "after a stop timeout")
        assert cleanup_kills(box, since), "the programs were not killed by the cleanup"


def test_a_stop_during_the_restart_delay_leaves_nothing_behind(booted: Container) -> None:
    """kill -9 of the daemon, then `systemctl stop` while systemd waits
    RestartSec= to restart it: no ExecStopPost= runs then, the unit goes
    inactive, and OnSuccess= starts the cleanup."""
    box = booted
    with drop_in(box, "[Service]\nRestartSec=60s\n"):
        programs = start_and_wait(box)
        box.run(["kill", "-9", systemctl_show(box, "MainPID")])
        wait_until(lambda: systemctl_show(box, "SubState") == "auto-restart", 15,
                   "the unit in auto-restart")
        assert alive(box, programs.values()) == sorted(programs.values())  # spared by systemd
        box.run(["systemctl", "stop", UNIT], timeout=60)
        assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
        assert_nothing_left(box, programs.values(), "after a stop in auto-restart")


def test_the_start_limit_ends_it_and_leaves_nothing_behind(booted: Container) -> None:
    """A crash whose restart hits the start limit: the unit fails without a
    new daemon; OnFailure= starts the cleanup."""
    box = booted
    with drop_in(box, "[Unit]\nStartLimitIntervalSec=1h\nStartLimitBurst=1\n"):
        box.run(["systemctl", "reset-failed", UNIT], check=False)  # the start counter too
        programs = start_and_wait(box)
        since = box.journal_mark()
        box.run(["kill", "-9", systemctl_show(box, "MainPID")])
        # The restart's start is refused; Result stays the crash's ("signal").
        wait_until(lambda: systemctl_show(box, "SubState") == "failed", 15, "SubState=failed")
        journal_entry(box, "saying the start limit was hit", f"UNIT={UNIT}.service", since=since,
                      where=lambda e: "Start request repeated too quickly" in e.get("MESSAGE", ""))
        assert_nothing_left(box, programs.values(), "after the start limit")


def test_a_crashed_daemon_is_restarted_and_its_programs_survive(booted: Container) -> None:
    box = booted
    programs = start_and_wait(box)
    restarts = int(systemctl_show(box, "NRestarts"))
    daemon = int(systemctl_show(box, "MainPID"))
    since = box.journal_mark()
    box.run(["kill", "-9", str(daemon)])

    def restarted() -> int:
        main = int(systemctl_show(box, "MainPID"))
        assert int(systemctl_show(box, "NRestarts")) == restarts + 1
        assert systemctl_show(box, "ActiveState") == "active" and main not in (0, daemon), main
        return main
    new_daemon = wait_until(restarted, 30, "systemd to restart the unit (Restart=on-failure)")
    # Right after the restart (the new daemon said READY=1): systemd killed none of them,
    # and they are still the unit's (what unit_pids reads is not empty by construction).
    assert alive(box, programs.values()) == sorted(programs.values())
    assert set(programs.values()) | {new_daemon} <= set(unit_pids(box))
    # systemd 252 starts the cleanup unit then (OnSuccess=): it saw the restart job and did nothing.
    assert cleanup_kills(box, since) == []
    journal_entry(box, "saying the cleanup was skipped", f"UNIT={CLEANUP}.service", since=since,
                  where=lambda e: "exec-condition" in e.get("MESSAGE", ""))
    CRASH.update(programs=programs, daemon=new_daemon)


def test_after_a_crash_each_program_runs_once_with_its_old_pid(booted: Container) -> None:
    box = booted
    assert CRASH, "needs test_a_crashed_daemon_is_restarted_and_its_programs_survive"
    old: dict[str, int] = CRASH["programs"]
    # vogsphere runs in either case (a second copy starts fine): no waiting on
    # web, whose second copy cannot bind its port today.
    rows = wait_state(box, dict.fromkeys(VOGSPHERE, "RUNNING"))
    assert {n: (rows[n]["state"], rows[n]["pid"]) for n in STEADY} == {
        n: ("RUNNING", pid) for n, pid in old.items()}
    workers = box.run(["pgrep", "-f", "vogsphere worker"], check=False).stdout.split()
    assert sorted(map(int, workers)) == sorted(old[n] for n in VOGSPHERE)
    web = box.run(["pgrep", "-f", "http.server 8042"], check=False).stdout.split()
    assert web == [str(old["web"])]


def test_stop_after_a_crash_leaves_nothing_behind(booted: Container) -> None:
    """The new daemon stops what it runs; what it did not know (today: the
    programs of the crashed one) goes with the cleanup."""
    box = booted
    assert CRASH, "needs test_a_crashed_daemon_is_restarted_and_its_programs_survive"
    everyone = [*CRASH["programs"].values(), *unit_pids(box)]
    box.run(["systemctl", "stop", UNIT], timeout=60)
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
    assert systemctl_show(box, "Result") == "success"
    assert_nothing_left(box, everyone, "after a stop following a crash")


def test_a_restart_by_hand_is_a_stop_and_a_start(booted: Container) -> None:
    """`systemctl restart`: the daemon stops its programs; the cleanup that
    OnSuccess= starts sees the queued start and leaves the new daemon be."""
    box = booted
    programs = start_and_wait(box)
    daemon = int(systemctl_show(box, "MainPID"))
    since = box.journal_mark()
    box.run(["systemctl", "restart", UNIT], timeout=60)
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    new_daemon = int(systemctl_show(box, "MainPID"))
    assert new_daemon not in (0, daemon)
    assert alive(box, programs.values()) == []  # stopped by the old daemon
    after = pids(wait_state(box, dict.fromkeys(STEADY, "RUNNING")), STEADY)
    assert alive(box, [new_daemon, *after.values()]) == sorted([new_daemon, *after.values()])
    assert cleanup_kills(box, since) == []
    box.run(["systemctl", "stop", UNIT], timeout=60)
    assert_nothing_left(box, [new_daemon, *after.values()], "after the restart and stop")
