"""The only module that forks, signals and waits.

A child gets its own session (so its own process group), the program's umask,
working directory, environment and user, and its stdout/stderr opened here
and handed over as file descriptors: the daemon never copies output. An
output file with a size bound (maxbytes > 0) is a pipe instead, whose read
end goes to the log writer (`Child.pipes`, see taskmasterd/logpipes.py);
without a bound the child holds its file itself (O_APPEND) and nobody else
touches the data. With redirect_stderr the child's stderr is its stdout's
descriptor (file, pipe, journal stream or /dev/null): one destination, in
the order written.
Exits are observed through a pidfd (`Child.pidfd`, readable when the child
exits) and collected with waitid(P_PIDFD): no SIGCHLD handler, no
waitpid(-1), no polling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from taskmasterd import terminal, variables
from taskmasterd.config import Output, OutputKind, ProgramConfig
from taskmasterd.lifecycle import SpawnError
from taskmasterd.logwriter import grow_pipe
from taskmasterd.statestore.records import ProcStat, parse_proc_stat

OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one process, resolved from the config."""

    process: str  # "prog" or "prog:N"
    program: str
    index: int
    argv: tuple[str, ...]
    base_env: Mapping[str, str]  # the daemon's environment
    env: Mapping[str, str]  # the program's env + TASKMASTER_*: wins over all
    cwd: str | None
    umask: int | None
    user: str | None
    stdout: Output
    stderr: Output
    logdir: str  # where AUTO output files go
    journal: bool  # AUTO output goes to the journal (running under journald)
    stdout_limit: tuple[int, int] = (0, 0)  # (maxbytes, backups); maxbytes 0 = no bound
    stderr_limit: tuple[int, int] = (0, 0)
    console: bool = False  # stdin/stdout/stderr on a pseudo-terminal (taskmasterd/console.py)
    scrollback: int = 0  # its ring's size, in the log writer
    redirect_stderr: bool = False  # stderr goes where stdout goes
    output_mode: int = 0o644  # of an output file it creates (a task's: 0o600, its env may hold secrets)


@dataclass(frozen=True)
class Pipe:
    """A bounded output: the read end of the child's pipe, for the log writer."""

    fd: int
    path: str
    maxbytes: int
    backups: int
    stream: str = ""  # stdout, stderr or console: with the process name, its key in the log writer
    scrollback: int = 0  # console: bytes of its output kept for `taskctl attach`


@dataclass
class Child:
    pid: int
    pidfd: int
    popen: subprocess.Popen[bytes] | None  # None: taken back (adopt, or kept across an exec)
    pipes: tuple[Pipe, ...] = ()
    start_ticks: int = 0  # /proc/PID/stat field 22: with the pid, its identity
    adopted: bool = False  # not our child: its exit status cannot be collected


def launch_spec(program: ProgramConfig, index: int, *, logdir: str, journal: bool,
                base_env: Mapping[str, str]) -> LaunchSpec:
    """Process `index` of `program`: its per-process variables (%{process},
    %{process_num}: taskmasterd.variables) filled in. Everything that names
    a process's files (spawn, Supervisor.output_file) goes through here."""
    name = program.process_names()[index]

    def fill(value: str) -> str:
        return variables.for_process(value, name, index)

    def fill_output(out: Output) -> Output:
        return out if out.path is None else dataclasses.replace(out, path=fill(out.path))

    env = {k: fill(v) for k, v in program.env}
    env["TASKMASTER_PROGRAM"] = program.name
    env["TASKMASTER_PROCESS_NAME"] = name
    env["TASKMASTER_PROCESS_NUM"] = str(index)
    return LaunchSpec(process=name, program=program.name, index=index,
                      argv=tuple(fill(word) for word in program.argv), base_env=base_env, env=env,
                      cwd=None if program.workingdir is None else fill(program.workingdir),
                      umask=program.umask, user=program.user, stdout=fill_output(program.stdout),
                      stderr=fill_output(program.stderr), logdir=logdir, journal=journal,
                      stdout_limit=(program.stdout_maxbytes, program.stdout_backups),
                      stderr_limit=(program.stderr_maxbytes, program.stderr_backups),
                      console=program.console, scrollback=program.console_scrollback,
                      redirect_stderr=program.redirect_stderr)


def source_stream(spec: LaunchSpec, stream: str) -> str:
    """The stream whose destination `stream` uses: stdout for a redirected stderr."""
    return "stdout" if stream == "stderr" and spec.redirect_stderr else stream


def output_path(spec: LaunchSpec, stream: str) -> str | None:
    """The file a stream is written to, or None (discarded or journal)."""
    stream = source_stream(spec, stream)
    out = spec.stdout if stream == "stdout" else spec.stderr
    if out.kind is OutputKind.FILE:
        return out.path
    if out.kind is OutputKind.AUTO and (not spec.journal or spec.console):
        # (a console's output is terminal output: a file even under journald)
        suffix = f"-{spec.index}" if spec.process != spec.program else ""
        return os.path.join(spec.logdir, f"{spec.program}{suffix}.{stream}.log")
    return None


class SpawnFailed(Exception):
    def __init__(self, error: SpawnError) -> None:
        super().__init__(str(error))
        self.error = error


def step_failed(exc: OSError, syscall: str) -> SpawnFailed:
    """The SpawnFailed of a step (`syscall`) that failed with `exc` (its errno)."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return SpawnFailed(SpawnError(code=code, syscall=syscall, message=os.strerror(exc.errno or 0)))


def open_output_file(path: str, mode: int) -> int:
    """An output file opened to append to (created with `mode`): its fd. One
    that cannot be opened is a spawn error, "open PATH"."""
    try:
        return os.open(path, OUTPUT_FLAGS, mode)
    except OSError as exc:
        raise step_failed(exc, f"open {path}") from None


def take(pid: int) -> Child:
    """The Child of a process this process started without subprocess
    (taskmasterd/fastspawn.py): a pidfd on it (its start time is the
    caller's to read, before it reaps it). Without a pidfd it cannot be
    watched: it is killed and reaped, and SpawnFailed raised."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise step_failed(exc, "pidfd_open") from None
    return Child(pid=pid, pidfd=pidfd, popen=None)


def _open_output(spec: LaunchSpec, stream: str, pipes: list[Pipe]) -> int:
    """The fd the child gets for `stream`; a bounded file adds its pipe's
    read end to `pipes`."""
    out = spec.stdout if stream == "stdout" else spec.stderr
    if out.kind is OutputKind.NULL:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    if out.kind is OutputKind.JOURNAL or (out.kind is OutputKind.AUTO and spec.journal):
        return _journal_stream(spec, stream)
    path = output_path(spec, stream)
    assert path is not None
    if out.kind is OutputKind.AUTO:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = open_output_file(path, spec.output_mode)
    maxbytes, backups = spec.stdout_limit if stream == "stdout" else spec.stderr_limit
    if maxbytes == 0:
        return fd
    os.close(fd)
    r, w = os.pipe2(os.O_CLOEXEC)
    grow_pipe(w)
    pipes.append(Pipe(r, path, maxbytes, backups, stream))
    return w


def _journal_stream(spec: LaunchSpec, stream: str) -> int:
    try:
        from systemd import journal
    except ImportError as exc:
        raise OSError(errno.ENOSYS, "systemd-python is not installed") from exc
    priority = 6 if stream == "stdout" else 4  # info / warning
    f = journal.stream(spec.program, priority=priority)
    fd = os.dup(f.fileno())
    f.close()
    os.set_inheritable(fd, False)
    return fd


def user_entry(user: str) -> pwd.struct_passwd:
    """The passwd entry of a `user:` (a name or a numeric uid); KeyError or
    ValueError if there is none."""
    return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)


def _user_ids(user: str) -> tuple[pwd.struct_passwd, list[int]]:
    entry = user_entry(user)
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return entry, groups


def spawn(spec: LaunchSpec, *, identify: bool = True) -> Child:
    """Start the process or raise SpawnFailed (errno + syscall). `identify`
    False: its start_ticks are left 0, for the caller to read (proc_stat)
    before it reaps the process."""
    env = dict(spec.base_env)
    user_kw: dict[str, object] = {}
    if spec.user is not None:
        try:
            entry, groups = _user_ids(spec.user)
        except (KeyError, ValueError):
            raise SpawnFailed(SpawnError("ENOENT", f"getpwnam {spec.user}", "no such user")) from None
        if os.geteuid() == 0:
            user_kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}
        elif entry.pw_uid != os.geteuid():
            raise SpawnFailed(SpawnError("EPERM", f"setuid {spec.user}",
                                         "the daemon must run as root to switch user"))
        env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    env.update(spec.env)
    if spec.console:
        return _spawn_on_terminal(spec, env, user_kw)
    fds: list[int] = []
    pipes: list[Pipe] = []
    try:
        for stream in ("stdout",) if spec.redirect_stderr else ("stdout", "stderr"):
            try:
                fds.append(_open_output(spec, stream, pipes))
            except OSError as exc:
                path = output_path(spec, stream) or stream
                raise step_failed(exc, f"open {path}") from None
        try:
            popen = subprocess.Popen(
                spec.argv, stdin=subprocess.DEVNULL, stdout=fds[0], stderr=fds[-1],
                cwd=spec.cwd, env=env, umask=-1 if spec.umask is None else spec.umask,
                start_new_session=True, close_fds=True, **user_kw)  # type: ignore[call-overload]
        except OSError as exc:
            raise _exec_error(exc, spec) from None
        except (ValueError, TypeError) as exc:  # e.g. a NUL byte the config let through
            raise SpawnFailed(SpawnError("EINVAL", f"execve {spec.argv[0]}", str(exc))) from None
    except BaseException:
        for pipe in pipes:
            os.close(pipe.fd)
        raise
    finally:
        for fd in fds:  # the write ends: only the child holds them (EOF when it is gone)
            os.close(fd)
    return watched(popen, pipes, identify)


def _spawn_on_terminal(spec: LaunchSpec, base: dict[str, str], user_kw: dict[str, object]) -> Child:
    """spawn() for `console: true`: stdin, stdout and stderr on a new
    pseudo-terminal, its controlling terminal; the master goes to the log
    writer as the process's one output (`Pipe` of stream "console")."""
    env = terminal.terminal_env(base, spec.env)
    path = output_path(spec, "stdout")
    try:
        if path is not None:
            if spec.stdout.kind is OutputKind.AUTO:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.close(open_output_file(path, spec.output_mode))  # one that cannot be written: a spawn error
    except OSError as exc:
        raise step_failed(exc, f"open {path}") from None
    owner = user_kw.get("user")
    try:
        master, slave = terminal.open_terminal(owner if isinstance(owner, int) else None)
    except OSError as exc:
        raise step_failed(exc, "openpty") from None
    maxbytes, backups = spec.stdout_limit
    # No bound: the writer's file just grows (2**62: never reached).
    pipe = Pipe(master, path or os.devnull, maxbytes if path and maxbytes else 2 ** 62,
                backups, "console", spec.scrollback)
    try:
        popen = subprocess.Popen(
            spec.argv, stdin=slave, stdout=slave, stderr=slave, cwd=spec.cwd, env=env,
            umask=-1 if spec.umask is None else spec.umask, start_new_session=True,
            close_fds=True, preexec_fn=terminal.take_controlling_terminal,
            **user_kw)  # type: ignore[call-overload]
    except OSError as exc:
        os.close(master)
        raise _exec_error(exc, spec) from None
    except (ValueError, TypeError, subprocess.SubprocessError) as exc:
        os.close(master)
        raise SpawnFailed(SpawnError("EINVAL", f"execve {spec.argv[0]}", str(exc))) from None
    finally:
        os.close(slave)  # only the child holds it: the master reads EIO once it is gone
    return watched(popen, [pipe])


def watched(popen: subprocess.Popen[bytes], pipes: list[Pipe], identify: bool = True) -> Child:
    """The Child of a process just started: its pidfd and start time (unless
    not `identify`)."""
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError as exc:
        # Without a pidfd we cannot watch it: don't leave it unsupervised.
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        for pipe in pipes:
            os.close(pipe.fd)
        raise step_failed(exc, "pidfd_open") from None
    # A zombie still has its stat: this cannot miss a child that died at once.
    stat = proc_stat(popen.pid) if identify else None
    return Child(pid=popen.pid, pidfd=pidfd, popen=popen, pipes=tuple(pipes),
                 start_ticks=stat.start_ticks if stat is not None else 0)


def proc_stat(pid: int) -> ProcStat | None:
    # One read(2) of the raw bytes (a stat line is < 1 KB; a comm of 16 bytes
    # at most): a text file object costs more than the read, once per task.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_proc_stat(data.decode("utf-8", "surrogateescape"))


def adopt(pid: int, start_ticks: int, pidfd: int | None = None) -> Child | str:
    """Take back a process a previous daemon started: a pidfd on it, if it
    is still the same process (its start time matches: a pid reused since
    is not it) and leads its own process group (ours all do). Else why not.

    After a crash it is not our child: its exit is seen through the pidfd,
    its status cannot be collected. Across our own exec it still is (same
    pid): `pidfd` is then the one handed over, and the status is real."""
    if pidfd is not None:
        os.set_inheritable(pidfd, False)  # it was open across our exec: not for children
    else:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "no longer running"
        except OSError as exc:
            return f"pidfd_open: {exc.strerror}"
    # Read after the pidfd is open: if the pid was reused in between, the
    # start time read now is the new process's, and we refuse it.
    stat = proc_stat(pid)
    ours = stat is not None and stat.ppid == os.getpid()  # after our own exec
    why = None
    if stat is None or (stat.state in ("Z", "X") and not ours):
        why = "no longer running"
    elif stat.start_ticks != start_ticks:
        why = f"pid {pid} is another process now (start time {stat.start_ticks}, recorded {start_ticks})"
    elif stat.pgrp != pid:
        why = f"pid {pid} no longer leads its process group ({stat.pgrp})"
    if why is not None:
        os.close(pidfd)
        return why
    return Child(pid=pid, pidfd=pidfd, popen=None, start_ticks=start_ticks, adopted=not ours)


def reap_adopted(child: Child) -> None:
    """An adopted process exited (its pidfd is readable): SIGKILL what it
    left in its group, as collect() does for our children, and close the
    pidfd. While a member lives, the kernel keeps the group's number from
    being reused, so this cannot reach an unrelated group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    os.close(child.pidfd)


def _exec_error(exc: OSError, spec: LaunchSpec) -> SpawnFailed:
    # subprocess reports which step failed in the child through `filename`:
    # the cwd for chdir, the executable for execve, None for the set-up
    # steps before them (setgroups/setuid/...).
    if spec.cwd is not None and exc.filename == spec.cwd:
        return step_failed(exc, f"chdir {spec.cwd}")
    if exc.filename is None:
        return step_failed(exc, "setuid" if spec.user else "exec setup")
    return step_failed(exc, f"execve {exc.filename}")


def collect(child: Child) -> int | None:
    """Reap an exited child; None if it has not exited (spurious wake-up).

    Returns the returncode (>= 0 exit status, < 0 killed by that signal).
    Before reaping, whatever the program left in its process group is
    SIGKILLed: the zombie leader still holds the group id, so the kill
    cannot hit an unrelated group that reused the number.
    """
    flags = os.WEXITED | os.WNOHANG
    info = os.waitid(os.P_PIDFD, child.pidfd, flags | os.WNOWAIT)
    if info is None:
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    os.waitid(os.P_PIDFD, child.pidfd, flags)
    if info.si_code == os.CLD_EXITED:
        status = info.si_status
    else:  # CLD_KILLED / CLD_DUMPED
        status = -info.si_status
    if child.popen is not None:
        child.popen.returncode = status  # so Popen never waits for it itself
    os.close(child.pidfd)
    return status


def kill_group(child: Child, sig: signal.Signals) -> None:
    """Signal the whole process group (children of the program too)."""
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass  # already gone; its exit is on its way through the pidfd


def process_age(start_ticks: int) -> float:
    """Seconds since a process started, from its /proc start time (clock
    ticks after boot) and the time since boot: immune to wall-clock jumps."""
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
