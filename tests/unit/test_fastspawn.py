"""taskmasterd/fastspawn.py: posix_spawn through ctypes gives the child what
subprocess.Popen(stdin=DEVNULL, start_new_session=True, close_fds=True)
gives it, reports exec errors by errno, and resolves commands in the
task's PATH as subprocess does. Real processes, reaped by pid (never
waitpid(-1))."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from taskmasterd import fastspawn

pytestmark = pytest.mark.skipif(not fastspawn.AVAILABLE, reason="glibc's posix_spawn is needed")


def run(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None,
        cwd: str | None = None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of argv started by fastspawn."""
    out, err = tmp_path / "out", tmp_path / "err"
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600) for p in (out, err)]
    try:
        envp = list(fastspawn.encode_environ(env if env is not None else {"PATH": "/usr/bin:/bin"})
                    .values())
        pid = fastspawn.spawn(argv[0], argv, envp, stdout=fds[0], stderr=fds[1], cwd=cwd)
    finally:
        for fd in fds:
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def test_the_child_gets_what_popen_would_give(tmp_path: Path) -> None:
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)  # an inheritable descriptor: closed in the child all the same
    try:
        code, out, err = run(tmp_path, ["/bin/sh", "-c",
                                        'echo "sid $(ps -o sid= -p $$) pid $$"; '
                                        'readlink /proc/self/fd/0; ls /proc/self/fd; '
                                        'grep -E "^Sig(Blk|Ign)" /proc/self/status; echo oops >&2'])
    finally:
        os.close(leak_r)
        os.close(leak_w)
    assert code == 0 and err == "oops\n"
    lines = out.splitlines()
    sid, pid = lines[0].split()[1], lines[0].split()[3]
    assert sid == pid  # its own session (and process group)
    assert lines[1] == "/dev/null"
    assert sorted(lines[2:-2], key=int) == ["0", "1", "2", "3"]  # 3: ls's own directory
    masks = dict(line.split(":\t") for line in lines[-2:])
    assert int(masks["SigBlk"], 16) == 0
    ignored = int(masks["SigIgn"], 16)
    assert not ignored & (1 << 12)  # SIGPIPE (13) back to its default: Python ignores it
    assert not ignored & (1 << 24)  # SIGXFSZ (25)


def test_environment_and_working_directory_are_the_given_ones(tmp_path: Path) -> None:
    where = tmp_path / "there"
    where.mkdir()
    code, out, _ = run(tmp_path, ["/bin/sh", "-c", "pwd; env | sort"],
                       env={"PATH": "/usr/bin:/bin", "ONLY": "this one"}, cwd=str(where))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(where)
    shells = ("PWD=", "OLDPWD=", "SHLVL=", "_=")  # what sh itself sets
    assert [line for line in lines[1:] if not line.startswith(shells)] == \
        ["ONLY=this one", "PATH=/usr/bin:/bin"]


def test_exec_errors_come_back_as_their_errno(tmp_path: Path) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as missing:
            fastspawn.spawn(str(tmp_path / "nowhere"), ["x"], [], stdout=null, stderr=null)
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(OSError) as refused:
            fastspawn.spawn(str(plain), ["x"], [], stdout=null, stderr=null)
        assert refused.value.errno == errno.EACCES
        with pytest.raises(ValueError, match="null byte"):
            fastspawn.spawn("/bin/true", ["/bin/true", "a\0b"], [], stdout=null, stderr=null)
    finally:
        os.close(null)


def test_spawns_from_threads_overlap(tmp_path: Path) -> None:
    """Two threads at once (the runner's spawners): both children run, each
    reaped by its pid."""
    pids: list[int] = []
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def start() -> None:
        for _ in range(20):
            pids.append(fastspawn.spawn("/bin/true", ["/bin/true"], [], stdout=null, stderr=null))
    threads = [threading.Thread(target=start) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        os.close(null)
    assert len(set(pids)) == 40
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in pids)


def test_resolve_searches_the_tasks_path_as_subprocess_does(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "tool").write_text("not executable")
    (first / "dir-tool").mkdir()
    good = second / "tool"
    good.write_text("#!/bin/sh\n")
    good.chmod(good.stat().st_mode | stat.S_IXUSR)
    (second / "dir-tool").write_text("#!/bin/sh\n")
    (second / "dir-tool").chmod(0o755)
    env = {"PATH": f"{first}:{second}"}
    assert fastspawn.resolve("tool", env) == str(good)  # the unexecutable one is passed over
    assert fastspawn.resolve("dir-tool", env) == str(second / "dir-tool")
    assert fastspawn.resolve("nothing-like-it", env) is None  # subprocess reports it
    assert fastspawn.resolve("./relative/tool", env) == "./relative/tool"  # a slash: as given


def test_what_it_cannot_do_is_left_to_subprocess(tmp_path: Path) -> None:
    assert fastspawn.supported(None, None)
    assert fastspawn.supported(None, str(tmp_path))
    assert not fastspawn.supported("nobody", None)  # no user switch
    assert not fastspawn.supported(None, str(tmp_path / "missing"))  # subprocess names the chdir


def test_environment_blocks() -> None:
    base = fastspawn.encode_environ({"A": "1", "B": "2", "BAD=NAME": "x", "NUL": "a\0b"})
    assert base == {"A": b"A=1", "B": b"B=2"}  # what the kernel could not take is left out
    assert fastspawn.environ_block(base, {}) == [b"A=1", b"B=2"]
    assert sorted(fastspawn.environ_block(base, {"B": "two", "C": "3"})) == [b"A=1", b"B=two", b"C=3"]
    assert base == {"A": b"A=1", "B": b"B=2"}  # the base is left as it was
