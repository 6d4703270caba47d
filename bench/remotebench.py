"""The `remote` measure (issue 16): `taskctl -H root@localhost status` with
1,000 programs beside `systemctl -H root@localhost list-units` on the same
machine, over the same SSH.

`systemctl -H` needs a booted systemd, which this machine's PID 1 is not,
so the measure boots one: Debian 12's systemd 252 in systemd-nspawn, with
tests/e2e/container.py (the end-to-end tests' recipe, E2E-NOTES.md). Its
root file system is the e2e one plus openssh-server and openssh-client,
cached under its own key beside it (the e2e tests' tarball is not touched).
Before boot: the .deb built from this tree (`make deb` when it is older
than the sources), /etc/taskmaster/taskmaster.yaml with N `sleep infinity`
programs (the package enables the unit: systemd starts it at boot), sshd on
127.0.0.1 only (PermitRootLogin prohibit-password, no passwords), a root
key made here, known_hosts filled from the host keys and BatchMode, so that
ssh never asks anything. The container has a private network (`lo` only)
and /etc/hosts maps localhost to 127.0.0.1 (minbase has no /etc/hosts, so
`localhost` did not resolve).

Then, inside the container, one process (bench's TIMER, run with the
container's python3 through one nsenter) runs every command once per
repetition, the order rotated each repetition, and times each from fork to
exit: taskctl -H and systemctl -H (the same ssh from PATH, the same key and
config), both again through a multiplexed ssh connection (ControlMaster:
what is left without the handshake), the local `taskctl status` and
`systemctl list-units` (what SSH adds), `ssh root@localhost true` (SSH
alone) and `ssh root@localhost taskctl status` (taskctl run over there, the
way without -H). Every command is run once first, outside the timing, with
its output checked (1000 rows, all RUNNING; the number of units) and the
connection checked to be 127.0.0.1 -> 127.0.0.1:22.

A host that cannot (not root, systemd-nspawn or mmdebstrap missing, no
network for the first root file system, no dpkg-buildpackage for the .deb)
gets one row saying so and why: skipped, not failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from taskbench import paired_ratios

from tests.e2e import debs
from tests.e2e.container import (
    HOST_TOOLS,
    INSTALL_HINT,
    PACKAGES,
    CommandFailed,
    Container,
    Unavailable,
    rootfs_tarball,
    wait_until,
)

# The e2e list (systemd, dbus, the package's dependencies) plus SSH.
BENCH_PACKAGES = (*PACKAGES, "openssh-server", "openssh-client")
TARGET = "root@localhost"
MUX = "root@mux"  # the same sshd, through a ControlMaster connection (see _SSH_CONFIG)
# As tests/e2e/conftest.py: what goes into the package (a .deb older than
# any of these is rebuilt).
START_TIMEOUT = 180.0  # boot -> all N RUNNING (a mass start under systemd, 2 vCPUs)
CAP = 60.0  # one command

_SSHD_CONFIG = """\
# the bench's (issue 16): loopback only, root by key only
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
"""

# Read by every ssh run as root: systemctl's and taskctl's alike. No
# multiplexing for `localhost`: each command pays the whole connection, as
# it does by default. `mux` is the same sshd through one master connection
# opened by the first use and kept (ControlPersist): the handshake then
# happens once, not per command.
_SSH_CONFIG = """\
Host localhost mux
    HostName 127.0.0.1
    HostKeyAlias localhost
    BatchMode yes
    StrictHostKeyChecking yes
    UserKnownHostsFile /root/.ssh/known_hosts
    IdentityFile /root/.ssh/id_ed25519
    IdentitiesOnly yes
Host mux
    ControlMaster auto
    ControlPath /root/.ssh/mux-%C
    ControlPersist 30m
"""

TIMER = r'''
"""The bench's `remote` measure, inside the container: each command once a
repetition, the order rotated each repetition; wall time of each, from fork
to exit (no shell), its exit code, the end of its stderr when it failed.
stdin: {"reps": N, "cap": seconds, "commands": {key: argv}};
stdout: {key: [[seconds, exit code, stderr tail], ...]}.
Popen.wait() and a kill timer, not wait(timeout=): Python 3.11's timed wait
sleeps up to 50 ms between polls."""
import json, subprocess, sys, tempfile, threading, time

job = json.load(sys.stdin)
keys = list(job["commands"])
out = {k: [] for k in keys}
with tempfile.TemporaryFile() as err:
    for rep in range(job["reps"]):
        for k in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            err.seek(0)
            err.truncate()
            t = time.perf_counter()
            proc = subprocess.Popen(job["commands"][k], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
            timer = threading.Timer(job["cap"], proc.kill)
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
            secs = time.perf_counter() - t
            tail = ""
            if proc.returncode != 0:
                err.seek(0)
                tail = err.read()[-300:].decode(errors="replace")
            out[k].append([secs, proc.returncode, tail])
json.dump(out, sys.stdout)
'''


def config_yaml(n: int) -> str:
    """N cheap programs that stay RUNNING (RUNNING at once: starttime 0),
    their output discarded."""
    lines = ["# the bench's (issue 16)", "programs:"]
    for i in range(n):
        lines += [f"  p{i}:", "    cmd: sleep infinity", "    starttime: 0",
                  "    stdout: null", "    stderr: null"]
    return "\n".join(lines) + "\n"


def commands(n: int) -> dict[str, tuple[str, list[str]]]:
    """key -> (row name, argv), in the order of the table."""
    list_units = ["list-units", "--no-pager"]
    return {
        "taskctl-H": (f"remote: taskctl -H {TARGET} status, N={n}",
                      ["taskctl", "-H", TARGET, "status"]),
        "systemctl-H": (f"remote: systemctl -H {TARGET} list-units",
                        ["systemctl", "-H", TARGET, *list_units]),
        "taskctl-H-mux": (f"remote, ssh multiplexed: taskctl -H {MUX} status, N={n}",
                          ["taskctl", "-H", MUX, "status"]),
        "systemctl-H-mux": (f"remote, ssh multiplexed: systemctl -H {MUX} list-units",
                            ["systemctl", "-H", MUX, *list_units]),
        "taskctl": (f"local: taskctl status, N={n} (in the container)",
                    ["taskctl", "status"]),
        "systemctl": ("local: systemctl list-units (in the container)",
                      ["systemctl", *list_units]),
        "ssh": (f"ssh alone: ssh -xT {TARGET} true", ["ssh", "-xT", TARGET, "true"]),
        "ssh-taskctl": (f"ssh {TARGET} taskctl status, N={n} (no -H)",
                        ["ssh", "-xT", TARGET, "taskctl", "status"]),
    }


def unavailable_reason() -> str | None:
    """Why this host cannot run the measure, or None."""
    if os.geteuid() != 0:
        return ("needs root (systemd-nspawn boots the container, mmdebstrap builds its root "
                "file system)")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing on this host: {', '.join(missing)} ({INSTALL_HINT})"
    return None


def deb_package() -> Path:
    """The .deb under test, built when older than the sources (tests.e2e.debs)."""
    print("#   the .deb (make deb when older than the sources) ...", file=sys.stderr, flush=True)
    return debs.deb_package()[0]


def prepare(box: Container, n: int) -> None:
    """Before boot, in the root directory: the programs, sshd, root's key."""
    box.write_file("/etc/hosts", "127.0.0.1\tlocalhost\n")
    box.write_file("/etc/taskmaster/taskmaster.yaml", config_yaml(n), 0o640)
    box.write_file("/etc/ssh/sshd_config.d/bench.conf", _SSHD_CONFIG)
    ssh = box.root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    box.chroot(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
                "/root/.ssh/id_ed25519"])
    shutil.copyfile(ssh / "id_ed25519.pub", ssh / "authorized_keys")
    # The host keys are those of the cached root file system (generated by
    # openssh-server's postinst when it was built): the same every run, on
    # a loopback that only this container has.
    known = [f"localhost {' '.join(k.read_text().split()[:2])}"
             for k in sorted((box.root / "etc" / "ssh").glob("ssh_host_*_key.pub"))]
    if not known:
        raise RuntimeError("no /etc/ssh/ssh_host_*_key.pub in the root file system")
    box.write_file("/root/.ssh/known_hosts", "\n".join(known) + "\n")
    box.write_file("/root/.ssh/config", _SSH_CONFIG, 0o600)
    box.write_file("/root/bench-remote-timer.py", TIMER.lstrip())


def check_running(box: Container, n: int) -> float:
    """Wait until `taskctl status` exits 0 (all RUNNING) with n rows; its time."""
    started = time.monotonic()

    def all_running() -> bool:
        proc = box.run(["taskctl", "--json", "status"], check=False, timeout=60)
        if proc.returncode not in (0, 3):
            raise CommandFailed(proc.returncode, proc.args, proc.stdout, proc.stderr)
        rows = json.loads(proc.stdout) if proc.stdout.strip() else []
        running = sum(1 for r in rows if r["state"] == "RUNNING")
        return proc.returncode == 0 and running == n == len(rows)

    wait_until(all_running, START_TIMEOUT, f"all {n} programs RUNNING (taskctl status exit 0)")
    return time.monotonic() - started


def check_loopback(box: Container) -> str:
    """The ssh connection is 127.0.0.1 -> 127.0.0.1:22, the container has
    only `lo`, systemd-stdio-bridge is /usr/bin's: a sentence saying so."""
    seen = box.run(["ssh", "-xT", TARGET, "echo $SSH_CONNECTION; command -v systemd-stdio-bridge"],
                   timeout=30).stdout.split("\n")
    client, _, server, port = seen[0].split()
    if (client, server, port) != ("127.0.0.1", "127.0.0.1", "22"):
        raise RuntimeError(f"ssh did not go over the loopback: SSH_CONNECTION={seen[0]!r}")
    if seen[1] != "/usr/bin/systemd-stdio-bridge":
        raise RuntimeError(f"systemd-stdio-bridge is {seen[1]!r} in the container")
    links = box.run(["ip", "-o", "link", "show"]).stdout.split("\n")
    names = sorted(line.split(":")[1].strip() for line in links if line.strip())
    if names != ["lo"]:
        raise RuntimeError(f"the container has network links besides lo: {names}")
    return "127.0.0.1 -> 127.0.0.1:22, lo only, /usr/bin/systemd-stdio-bridge"


# New SSH connections (sshd's log) each command makes: one for each not
# multiplexed; none through `mux` (but the very first, which opens the master).
CONNECTIONS = {"taskctl-H": 1, "systemctl-H": 1, "taskctl-H-mux": 0, "systemctl-H-mux": 0,
               "taskctl": 0, "systemctl": 0, "ssh": 1, "ssh-taskctl": 1}
ACCEPTED = "Accepted publickey for root from 127.0.0.1 "


def accepted(box: Container) -> int:
    """How many SSH connections sshd has accepted (its journal)."""
    return sum(1 for e in box.journal("_SYSTEMD_UNIT=ssh.service")
               if str(e.get("MESSAGE", "")).startswith(ACCEPTED))


def until_accepted(box: Container, expected: int) -> int:
    """The count once it has reached `expected` (journald may lag a little),
    or what it is after a few seconds."""
    try:
        return wait_until(lambda: [c] if (c := accepted(box)) >= expected else None, 5.0,
                          f"{expected} connections in sshd's journal")[0]
    except TimeoutError:
        return accepted(box)


def first_runs(box: Container, cmds: dict[str, tuple[str, list[str]]], n: int) -> dict[str, str]:
    """Each command once, untimed (it opens the mux master and warms the
    caches), its output checked, and the SSH connections it made counted
    (so a `-H` that did not go through ssh, or a mux that did not multiplex,
    would show); key -> a failure note (absent: fine), plus "units" -> how
    many units systemctl -H listed."""
    notes: dict[str, str] = {}
    master = False
    for key, (_, argv) in cmds.items():
        before = accepted(box)
        proc = box.run(argv, check=False, timeout=CAP)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [""])[-1][:120]
            if key.startswith("taskctl-H") and proc.returncode == 2:
                why = f"this taskctl has no -H: {why}"
            notes[key] = f"exit {proc.returncode}: {why}"
            continue
        opens = key.endswith("-mux") and not master
        master = master or opens
        made = until_accepted(box, before + CONNECTIONS[key] + opens) - before
        if made != CONNECTIONS[key] + opens:
            raise RuntimeError(f"{' '.join(argv)}: {made} SSH connections accepted by sshd, "
                               f"{CONNECTIONS[key] + opens} expected")
        if key.startswith(("taskctl", "ssh-taskctl")):
            rows = [r for r in proc.stdout.splitlines()[1:] if r.strip()]
            running = sum(1 for r in rows if r.split()[1:2] == ["RUNNING"])
            if running != n or len(rows) != n:
                notes[key] = f"{running}/{len(rows)} rows RUNNING, {n} expected"
        if key == "systemctl-H":
            for line in proc.stdout.splitlines():
                if "loaded units listed" in line:
                    notes["units"] = line.split()[0]
    box.run(["ssh", "-O", "check", MUX])  # the master is there (exit 255 if not)
    return notes


def remote(drv_cls: Any, opts: argparse.Namespace) -> list[dict[str, Any]]:
    from measures import row

    if drv_cls.name != "taskmasterd":
        return []
    started = time.monotonic()
    timings: dict[str, float] = {}
    n = opts.remote_n
    cmds = commands(n)
    why = unavailable_reason()
    if why is None:
        try:
            tarball = rootfs_tarball(BENCH_PACKAGES)
            deb = deb_package()
        except Unavailable as exc:
            why = str(exc).splitlines()[0]
    if why is not None:
        print(f"#   remote: skipped: {why}", file=sys.stderr, flush=True)
        return [row("remote: taskctl -H vs systemctl -H (skipped)", "", [], f"skipped: {why}")]
    timings["rootfs, .deb"] = time.monotonic() - started
    with Container(tarball) as box:
        box.install_deb(deb)
        prepare(box, n)
        box.boot(timeout=START_TIMEOUT)
        timings["running"] = check_running(box, n)
        where = check_loopback(box)
        notes = first_runs(box, cmds, n)
        job = {"reps": opts.reps_remote, "cap": CAP,
               "commands": {k: argv for k, (_, argv) in cmds.items() if k not in notes}}
        before = accepted(box)
        t = time.monotonic()
        out = json.loads(box.run(["python3", "/root/bench-remote-timer.py"], input=json.dumps(job),
                                 timeout=CAP * len(cmds) * opts.reps_remote).stdout)
        timings["timed"] = time.monotonic() - t
        # every run that exited 0 made the connections it should, and no
        # more (a failed one may have made its connection or not)
        least = sum(CONNECTIONS[k] for k, runs in out.items() for _, rc, _ in runs if rc == 0)
        most = sum(CONNECTIONS[k] * len(runs) for k, runs in out.items())
        made = until_accepted(box, before + most) - before
        if not least <= made <= most:
            raise RuntimeError(f"the timed runs made {made} SSH connections, "
                               f"{least}{f' to {most}' if most != least else ''} expected")
        connections = f"{made} SSH connections for {opts.reps_remote} repetitions"
    timings.update(box.timings)
    by_rep: dict[str, list[float | None]] = {}  # ms, None for a failed run
    for key, runs in out.items():
        failed = [(rc, tail) for _, rc, tail in runs if rc != 0]
        if failed:
            rc, tail = failed[0]
            notes[key] = f"{len(failed)}/{len(runs)} runs failed, e.g. exit {rc}: {tail.strip()[-120:]}"
        by_rep[key] = [secs * 1000 if rc == 0 else None for secs, rc, _ in runs]
    samples = {k: [v for v in reps if v is not None] for k, reps in by_rep.items()}
    units = notes.pop("units", "?")
    rows = []
    for key, (name, _) in cmds.items():
        note = notes.get(key, "")
        if key.startswith("systemctl") and not note:
            note = f"{units} units"
        if key == "ssh" and not note:
            note = f"{where}; {connections}"
        rows.append(row(name, "ms", samples.get(key, []), note))
        if key.startswith("systemctl-H"):  # the ratio right after each pair
            pairs = [(tm, sd) for tm, sd in zip(by_rep.get(key.replace("systemctl", "taskctl"), []),
                                                by_rep.get(key, []), strict=False)
                     if tm is not None and sd is not None]  # the same repetition, both exit 0
            ratios = paired_ratios([tm for tm, _ in pairs], [sd for _, sd in pairs])
            label = ", ssh multiplexed" if key.endswith("mux") else ""
            rows.append(row(f"remote{label}: taskctl -H / systemctl -H (pair by pair)", "x",
                            ratios, "" if ratios else "no repetition with both exiting 0"))
    rows.append(row("remote: the measure's own run time (container included)", "s",
                    [time.monotonic() - started],
                    ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())))
    return rows
