"""One driver per supervisor, same methods, so a measure runs unchanged on both.

A workload is a dict name -> Program. `start()` writes the supervisor's own
config in a private temp dir, launches the daemon (taskmasterd on a private
dbus-daemon; supervisord with a unix socket only, no TCP), and returns the
perf_counter() at launch. `stop()` always ends everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.dbus_fixtures import session_bus  # noqa: E402

SUPERVISOR_VERSION = "4.2.5"
SUP_VENV = ROOT / "bench" / ".venv-supervisor"
MARKER_KEY = "TM_BENCH_MARKER"
SUP_AUTORESTART = {"always": "true", "never": "false"}


@dataclass
class Program:
    cmd: str
    autostart: bool = True
    autorestart: str = "unexpected"  # always | never | unexpected
    starttime: int = 0
    stoptime: int = 10
    stdout: str | None = None  # path, or None = discard
    env: dict[str, str] = field(default_factory=dict)
    maxbytes: int = 0  # stdout rotation (0 = unbounded: the child writes its file itself)
    backups: int = 0
    console: bool = False  # taskmasterd only: on a pseudo-terminal (its stderr is the terminal)


@functools.cache
def project_python() -> str:
    """The interpreter taskmasterd and taskctl run with: the bench's own
    (BENCH_PYTHON: the development venv by default), with our sources' .pyc
    compiled first, as an installed copy has them (some
    machines set PYTHONDONTWRITEBYTECODE: every start would compile them).

    /usr/bin/python3 with Debian's packages (how the .deb runs) was tried:
    taskctl timings were the same within this VM's noise, and a PYTHONPATH
    in front of the standard library costs a failed lookup per import."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "taskmasterd"),
                    str(ROOT / "taskctl")], env=env, stdout=subprocess.DEVNULL, check=True)
    return sys.executable


def ensure_supervisor() -> Path:
    """bench/.venv-supervisor with supervisor==SUPERVISOR_VERSION (created if missing)."""
    exe = SUP_VENV / "bin" / "supervisord"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SUP_VENV)], check=True)
        subprocess.run([str(SUP_VENV / "bin" / "pip"), "install", "-q",
                        f"supervisor=={SUPERVISOR_VERSION}"], check=True)
    return exe


def ps_state(pid: int) -> str | None:
    """Process state letter from /proc, None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


def alive(pid: int) -> bool:
    return ps_state(pid) not in (None, "Z", "X")


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ctx_switches(pid: int) -> int:
    """voluntary + nonvoluntary context switches summed over every thread."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def log_writers_of(pid: int) -> list[int]:
    """taskmasterd's log-writer process(es): children running taskmasterd.logwriter."""
    found = []
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"taskmasterd.logwriter" in f.read():
                    found.append(child)
        except OSError:
            continue
    return found


def children_of(ppid: int) -> list[int]:
    """Direct children of `ppid`, cheaply: /proc/PID/task/*/children (a list
    per thread, CONFIG_PROC_CHILDREN) when the kernel has it, else a scan of
    every /proc/*/stat (~25 ms of CPU with 1000 processes: polled often, that
    scan alone would load a core and slow the daemon being measured)."""
    try:
        tids = os.listdir(f"/proc/{ppid}/task")
        out: list[int] = []
        for tid in tids:
            with open(f"/proc/{ppid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        return out
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{ppid}"):
            return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == ppid and rest[0] not in (b"Z", b"X"):
            out.append(int(entry))
    return out


class ExecWatcher:
    """Counts the children of `ppid` that have exec'd `command`; each child
    is checked until it has, then remembered (a sleep stays a sleep), so a
    poll costs a few µs per new child, not a /proc scan."""

    def __init__(self, ppid: int, command: str) -> None:
        self.ppid = ppid
        self.command = command
        self.done: set[int] = set()

    def count(self) -> int:
        live = set(children_of(self.ppid))
        self.done &= live
        for pid in live - self.done:
            if comm(pid) == self.command and alive(pid):
                self.done.add(pid)
        return len(self.done)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host):  # type: ignore[override]
        return _UnixHTTPConnection(self._path)


class Driver:
    name = "?"
    cli_name = "?"

    def __init__(self) -> None:
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.dir = Path()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _mkdir(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
        self.dir = Path(self.tmp.name)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.proc.returncode}; see {self.dir}")
            try:
                self.list_processes()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def states(self) -> dict[str, tuple[str, int]]:
        return {n: (s, p) for n, s, p in self.list_processes()}

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            s, pid = self.states().get(name, ("?", 0))
            if s == state:
                return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {name} not {state} after {timeout}s (is {s})")
            time.sleep(0.005)

    def _kill_daemon(self, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # To implement: start(programs) -> float, stop(), list_processes(),
    # start_process(name), stop_process(name), cli_status() -> argv


class Taskmasterd(Driver):
    name = "taskmasterd"
    cli_name = "taskctl status"
    DEST = "org.taskmaster.Taskmaster1"
    PATH = "/org/taskmaster/Taskmaster1"
    IFACE = "org.taskmaster.Taskmaster1.Manager"

    def __init__(self) -> None:
        super().__init__()
        self.python = project_python()
        self.loop = asyncio.new_event_loop()
        self.bus = None
        self._buscm: contextlib.AbstractContextManager[str] | None = None
        self.address = ""
        self.conf = Path()
        self.env: dict[str, str] = {}
        self.notify_sock: socket.socket | None = None

    def start(self, programs: dict[str, Program], notify: bool = False,
              sections: dict[str, dict] | None = None) -> float:
        """`notify`: the daemon gets a NOTIFY_SOCKET the bench listens on
        (`wait_notify`), as under systemd's Type=notify. `sections`: more
        top-level sections of the config (e.g. `tasks:`)."""
        import yaml
        self._mkdir()
        self._buscm = session_bus(self.dir)
        self.address = self._buscm.__enter__()
        progs = {}
        for name, p in programs.items():
            # startlimit_burst 0: supervisord has no start limit, and the
            # restart measure kills a process 15 times within a few seconds.
            d = {"cmd": p.cmd, "autostart": p.autostart, "autorestart": p.autorestart,
                 "starttime": p.starttime, "stoptime": p.stoptime,
                 "stdout": p.stdout, "stderr": None, "env": dict(p.env),
                 "stdout_maxbytes": p.maxbytes, "stdout_backups": p.backups,
                 "startlimit_burst": 0}
            if p.console:  # stdout and stderr are the terminal: `stderr` must not be set
                d["console"] = True
                del d["stderr"]
            progs[name] = d
        self.conf = self.dir / "taskmaster.yaml"
        # statedir and runtime dir private too: the state store (re-adoption)
        # and the log writer's socket are never another daemon's.
        self.conf.write_text(yaml.safe_dump({
            "taskmasterd": {"logfile": str(self.logfile),
                            "logdir": str(self.dir / "logs"),
                            "statedir": str(self.dir / "state")},
            "programs": progs, **(sections or {})}, sort_keys=False))
        self.env = dict(os.environ, TASKMASTER_RUNTIME_DIR=str(self.dir / "run"))
        self.env.pop("NOTIFY_SOCKET", None)
        if notify:
            self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.notify_sock.bind(str(self.dir / "notify.sock"))
            self.env["NOTIFY_SOCKET"] = str(self.dir / "notify.sock")
        return self.launch()

    def launch(self) -> float:
        """Start taskmasterd on the config written by start(); returns the
        perf_counter() just before the fork. Also how a second daemon is
        started on the same config and statedir (readopt)."""
        err = open(self.dir / "stderr.txt", "ab")  # noqa: SIM115 (closed once handed over)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.python, "-m", "taskmasterd", "-c", str(self.conf), "--address", self.address],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.dir,
            start_new_session=True, env=self.env)
        err.close()
        return t0

    @property
    def logfile(self) -> Path:
        return self.dir / "taskmasterd.log"

    def log_kinds(self, offset: int = 0) -> tuple[list[str], int]:
        """Event kinds of the lifecycle log's lines from byte `offset` on
        ("2026-11-23 10:42:04.723 INFO name KIND ..."), and the new offset."""
        with open(self.logfile, "rb") as f:
            f.seek(offset)
            data = f.read()
        kinds = [ln.split()[4].decode() for ln in data.splitlines()
                 if len(ln.split()) > 4 and ln[:2] == b"20"]
        return kinds, offset + len(data)

    def wait_notify(self, key: str, timeout: float) -> float | None:
        """perf_counter() when a datagram holding `key`=... arrives (None at
        the timeout); earlier datagrams are read and dropped."""
        assert self.notify_sock is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.notify_sock], [], [], left)
            if ready:
                text = self.notify_sock.recv(65536).decode(errors="replace")
                t = time.perf_counter()
                if any(line.startswith(key + "=") for line in text.splitlines()):
                    return t

    def drain_notify(self) -> None:
        assert self.notify_sock is not None
        while select.select([self.notify_sock], [], [], 0)[0]:
            self.notify_sock.recv(65536)

    def reexecute(self) -> None:
        """Manager.Reexecute: replied before the exec."""
        self._call("Reexecute")

    def kill9(self) -> None:
        """SIGKILL the daemon alone (not its programs, each in its own group)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        if self.bus is not None:  # its unique name is gone; a new connection for the next
            with contextlib.suppress(Exception):
                self.bus.disconnect()
            self.bus = None

    async def _connect(self):
        from dbus_next.aio import MessageBus
        return await MessageBus(bus_address=self.address).connect()

    def _call(self, member: str, signature: str = "", body: list | None = None):
        from dbus_next import Message, MessageType
        if self.bus is None:
            self.bus = self.loop.run_until_complete(self._connect())
        reply = self.loop.run_until_complete(self.bus.call(Message(
            destination=self.DEST, path=self.PATH, interface=self.IFACE, member=member,
            signature=signature, body=body or [])))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{reply.error_name}: {reply.body}")
        return reply.body

    def list_processes(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[2], r[3]) for r in self._call("ListProcesses")[0]]

    def start_process(self, name: str) -> None:
        self._call("Start", "s", [name])

    def stop_process(self, name: str) -> None:
        self._call("Stop", "s", [name])

    def cli_status(self) -> list[str]:
        return [self.python, "-m", "taskctl", "--address", self.address, "status"]

    def fanout(self, target: str, expect: int, timeout: float) -> tuple[float, int]:
        """Stop(target) and count ProcessStateChanged signals on a second
        connection; returns (seconds from the call to the last one, count)."""
        from dbus_next import Message, MessageType

        async def run() -> tuple[float, int]:
            sub = await self._connect()
            got: list[float] = []
            done = asyncio.Event()

            def handler(msg: Message) -> None:
                if msg.message_type == MessageType.SIGNAL and msg.member == "ProcessStateChanged":
                    got.append(time.perf_counter())
                    if len(got) >= expect:
                        done.set()
            sub.add_message_handler(handler)
            await sub.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="AddMatch",
                                   signature="s", body=[f"type='signal',sender='{self.DEST}',"
                                                        "member='ProcessStateChanged'"]))
            caller = await self._connect()
            t0 = time.perf_counter()
            await caller.call(Message(destination=self.DEST, path=self.PATH, interface=self.IFACE,
                                      member="Stop", signature="s", body=[target]))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
            # a short grace for stragglers beyond `expect` (none expected)
            await asyncio.sleep(0.2)
            sub.disconnect()
            caller.disconnect()
            return (got[-1] - t0 if got else float("nan")), len(got)
        return self.loop.run_until_complete(run())

    def stop(self, keep_dir: bool = False) -> tempfile.TemporaryDirectory[str] | None:
        """Stop the daemon and its bus; remove its directory, or with
        `keep_dir` hand it back for the caller to remove later."""
        if self.bus is not None:
            with contextlib.suppress(Exception):
                self.bus.disconnect()
            self.bus = None
        self._kill_daemon(60)
        if self.notify_sock is not None:
            self.notify_sock.close()
            self.notify_sock = None
        if self._buscm is not None:
            self._buscm.__exit__(None, None, None)
            self._buscm = None
        kept, self.tmp = self.tmp, None
        if kept is not None and not keep_dir:
            kept.cleanup()
            return None
        return kept


class Supervisord(Driver):
    name = "supervisord"
    cli_name = "supervisorctl status"

    def __init__(self) -> None:
        super().__init__()
        self.exe = ensure_supervisor()
        self.sock = ""
        self.conf = Path()
        self._rpc: xmlrpc.client.ServerProxy | None = None

    def start(self, programs: dict[str, Program]) -> float:
        self._mkdir()
        self.sock = str(self.dir / "supervisor.sock")
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.dir / 'supervisord.log'}", "logfile_maxbytes=0",
            f"pidfile={self.dir / 'supervisord.pid'}", "nodaemon=true", "minfds=8192",
            f"childlogdir={self.dir}", "loglevel=info", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.sock}", ""]
        for name, p in programs.items():
            if p.console:
                raise ValueError(f"{name}: supervisord has no console (no pseudo-terminal)")
            env = ",".join(f'{k}="{v}"' for k, v in p.env.items())
            lines += [f"[program:{name}]", f"command={p.cmd}",
                      f"autostart={'true' if p.autostart else 'false'}",
                      f"autorestart={SUP_AUTORESTART.get(p.autorestart, 'unexpected')}",
                      f"startsecs={p.starttime}", f"stopwaitsecs={p.stoptime}",
                      "stopasgroup=true", "killasgroup=true",
                      f"stdout_logfile={p.stdout or 'NONE'}",
                      f"stdout_logfile_maxbytes={p.maxbytes}",
                      f"stdout_logfile_backups={p.backups}",
                      "stderr_logfile=NONE"]
            if env:
                lines.append(f"environment={env}")
            lines.append("")
        self.conf = self.dir / "supervisord.conf"
        self.conf.write_text("\n".join(lines))
        return self.launch()

    def launch(self) -> float:
        err = open(self.dir / "stderr.txt", "ab")  # noqa: SIM115 (closed once handed over)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(self.exe), "-n", "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     cwd=self.dir, start_new_session=True)
        err.close()
        return t0

    @property
    def rpc(self) -> xmlrpc.client.ServerProxy:
        if self._rpc is None:
            self._rpc = xmlrpc.client.ServerProxy("http://localhost",
                                                  transport=_UnixTransport(self.sock))
        return self._rpc

    def list_processes(self) -> list[tuple[str, str, int]]:
        return [(i["name"], i["statename"], i["pid"])
                for i in self.rpc.supervisor.getAllProcessInfo()]

    def start_process(self, name: str) -> None:
        self.rpc.supervisor.startProcess(name, False)

    def stop_process(self, name: str) -> None:
        self.rpc.supervisor.stopProcess(name, False)

    def cli_status(self) -> list[str]:
        return [str(SUP_VENV / "bin" / "supervisorctl"), "-c", str(self.conf), "status"]

    def kill9(self) -> None:
        """SIGKILL the daemon alone: its programs (each in its own process
        group, setpgrp) are orphaned and keep running."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._rpc = None

    def stop(self) -> None:
        self._rpc = None
        self._kill_daemon(60)
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def marked(marker: str) -> list[int]:
    """Live pids whose environment holds MARKER_KEY=marker (a /proc scan:
    never while timing)."""
    needle = f"{MARKER_KEY}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not alive(int(entry)):
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_marked(marker: str) -> None:
    """SIGKILL every process of the workload still alive (and its group):
    programs orphaned by a daemon killed with -9 outlive `stop()`."""
    for pid in marked(marker):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def shq(s: str) -> str:
    return shlex.quote(s)


DRIVERS = {"taskmasterd": Taskmasterd, "supervisord": Supervisord}
