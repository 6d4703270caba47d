"""Bounded output (issue 11 §1): the size keys, the rotation decision, the
log-writer process on its own (a real process, fed real pipes), and
`taskctl tail -f` following a rotated file."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from taskctl import context, follow
from taskmasterd.config import (
    DEFAULT_BACKUPS,
    DEFAULT_MAXBYTES,
    ConfigError,
    parse_config,
    parse_size,
)
from taskmasterd.logproto import PROTOCOL, encode
from taskmasterd.logwriter import FALLOC_FL_KEEP_SIZE, fallocate, next_move, rotation_renames
from taskmasterd.reload import plan_reload
from tests.harness import wait_until

# ---- the keys


def program(extra: str) -> str:
    return f"programs:\n  web:\n    cmd: yes\n{extra}"


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "/etc/t.yaml")
    return [str(i) for i in exc.value.issues]


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("1048576", 1048576), ("1KB", 1024), ("1MB", 1024 ** 2), ("50MB", 50 * 1024 ** 2),
    ("2GB", 2 * 1024 ** 3), ("1mb", 1024 ** 2), ("1 MB", 1024 ** 2), (" 3kb ", 3072),
])
def test_sizes_as_supervisord_writes_them(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-1", "1TB", "1 M", "0x10", "1e6", "١MB", "1B"])
def test_not_sizes(text: str) -> None:
    assert parse_size(text) is None


def test_defaults_are_supervisords() -> None:
    p = parse_config(program(""), "/etc/t.yaml").programs[0]
    assert (p.stdout_maxbytes, p.stdout_backups, p.stderr_maxbytes, p.stderr_backups) == \
        (50 * 1024 * 1024, 10, 50 * 1024 * 1024, 10) == (DEFAULT_MAXBYTES, DEFAULT_BACKUPS) * 2


def test_the_four_keys_are_read() -> None:
    p = parse_config(program("    stdout_maxbytes: 1MB\n    stdout_backups: 3\n"
                             "    stderr_maxbytes: 0\n    stderr_backups: 0\n"
                             "    env: {X: '1'}\n"), "/etc/t.yaml").programs[0]
    assert (p.stdout_maxbytes, p.stdout_backups, p.stderr_maxbytes, p.stderr_backups) == \
        (1024 ** 2, 3, 0, 0)
    quoted = parse_config(program("    stdout_maxbytes: '512KB'\n"), "/etc/t.yaml").programs[0]
    assert quoted.stdout_maxbytes == 512 * 1024


def test_bad_sizes_and_backups_are_located() -> None:
    found = issues(program("    stdout_maxbytes: 1.5MB\n    stderr_maxbytes: [1]\n"
                           "    stdout_backups: -1\n    stderr_backups: 1MB\n"
                           "    stdout_maxbytes_: 1\n"))
    assert found[0].startswith("/etc/t.yaml:4:22: programs.web.stdout_maxbytes: expected a size")
    assert "found '1.5MB'" in found[0]
    assert found[1].startswith("/etc/t.yaml:5:22: programs.web.stderr_maxbytes: expected a size")
    assert found[2] == "/etc/t.yaml:6:21: programs.web.stdout_backups: must be between 0 and 1000, found -1"
    assert found[3].startswith("/etc/t.yaml:7:21: programs.web.stderr_backups: expected an integer")
    assert "did you mean 'stdout_maxbytes'" in found[4]
    assert len(found) == 5
    assert "at most 1024GB" in issues(program("    stdout_maxbytes: 1025GB\n"))[0]


@pytest.mark.parametrize(("theirs", "ours"), [
    ("stdout_logfile_maxbytes", "stdout_maxbytes"), ("stdout_logfile_backups", "stdout_backups"),
    ("stderr_logfile_maxbytes", "stderr_maxbytes"), ("stderr_logfile_backups", "stderr_backups"),
])
def test_supervisord_names_point_to_ours(theirs: str, ours: str) -> None:
    [msg] = issues(program(f"    {theirs}: 1\n"))
    assert msg == (f"/etc/t.yaml:4:5: programs.web.{theirs}: unknown key '{theirs}' (did you mean "
                   f"'{ours}'? '{theirs}' is supervisord's name for it)")


def test_a_new_bound_restarts_the_program() -> None:
    old = parse_config(program(""), "/etc/t.yaml")
    new = parse_config(program("    stderr_backups: 2\n"), "/etc/t.yaml")
    plan = plan_reload(old, new)
    assert [p.name for p in plan.restarted] == ["web"] and not plan.updated


# ---- the rotation decision


def test_rotation_renames_oldest_first() -> None:
    assert rotation_renames("/l/f", 3) == [("/l/f.2", "/l/f.3"), ("/l/f.1", "/l/f.2"), ("/l/f", "/l/f.1")]
    assert rotation_renames("/l/f", 1) == [("/l/f", "/l/f.1")]
    assert rotation_renames("/l/f", 0) == []  # truncated in place instead


def test_next_move_never_passes_maxbytes() -> None:
    assert next_move(0, 1000, chunk=4096) == (False, 1000)
    assert next_move(999, 1000, chunk=4096) == (False, 1)
    assert next_move(1000, 1000, chunk=4096) == (True, 1000)
    assert next_move(5000, 1000, chunk=4096) == (True, 1000)  # grown by someone else: rotate
    assert next_move(0, 10 ** 9, chunk=4096) == (False, 4096)


# ---- the writer process


class WriterProc:
    """A real `python -m taskmasterd.logwriter` on a socketpair."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-m", "taskmasterd.logwriter",
                                      str(theirs.fileno())], pass_fds=(theirs.fileno(),))
        theirs.close()
        self.next_id = 1

    def follow(self, path: Path, maxbytes: int, backups: int) -> tuple[int, int]:
        """A pipe whose data goes to `path`: (its write end, its id)."""
        r, w = os.pipe()
        msg = encode("follow", id=self.next_id, process="p", stream="stdout", path=str(path),
                     maxbytes=maxbytes, backups=backups)
        socket.send_fds(self.sock, [msg], [r])
        os.close(r)
        self.next_id += 1
        return w, self.next_id - 1

    def receive(self, timeout: float = 10.0) -> dict[str, object]:
        self.sock.settimeout(timeout)
        msg = dict(json.loads(self.sock.recv(65536)))
        assert msg.pop("v") == PROTOCOL
        return msg

    def close(self) -> int:
        self.sock.close()  # as if the daemon died: drain, then exit
        return self.proc.wait(timeout=10)


def write_all(fd: int, total: int, block: bytes) -> None:
    done = 0
    while done < total:
        done += os.write(fd, block[: total - done])


def test_writer_bounds_and_rotates(tmp_path: Path) -> None:
    w = WriterProc()
    out = tmp_path / "out.log"
    fd, sid = w.follow(out, 100_000, 2)
    write_all(fd, 1_000_000, b"0123456789" * 6553)
    os.close(fd)
    assert w.receive() == {"op": "eof", "id": sid}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]
    assert [(tmp_path / n).stat().st_size for n in ("out.log", "out.log.1", "out.log.2")] == \
        [100_000, 100_000, 100_000]  # 1 MB = 10 files; the last 3 kept, each exactly full
    assert w.close() == 0


def test_writer_keeps_the_order_and_shares_a_file(tmp_path: Path) -> None:
    w = WriterProc()
    out = tmp_path / "both.log"
    a, _ = w.follow(out, 10 ** 9, 0)
    b, _ = w.follow(out, 10 ** 9, 0)
    os.write(a, b"".join(b"a%d\n" % i for i in range(1000)))
    os.close(a)
    w.receive()
    os.write(b, b"b\n")
    os.close(b)
    w.receive()
    assert out.read_bytes() == b"".join(b"a%d\n" % i for i in range(1000)) + b"b\n"
    assert w.close() == 0


def test_zero_backups_restart_the_file_empty(tmp_path: Path) -> None:
    w = WriterProc()
    out = tmp_path / "out.log"
    fd, _ = w.follow(out, 1000, 0)
    write_all(fd, 2500, b"x" * 2500)
    os.close(fd)
    w.receive()
    assert [p.name for p in tmp_path.iterdir()] == ["out.log"] and out.stat().st_size == 500
    assert w.close() == 0


def test_a_restarted_file_has_its_blocks_reserved_until_it_closes(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        if fallocate(f.fileno(), FALLOC_FL_KEEP_SIZE, 0, 4096):
            pytest.skip(f"no fallocate(FALLOC_FL_KEEP_SIZE) on {tmp_path}")
    w = WriterProc()
    out = tmp_path / "out.log"
    fd, sid = w.follow(out, 100_000, 1)
    write_all(fd, 150_000, b"0123456789" * 1000)
    wait_until("the rotation", lambda: Path(f"{out}.1").exists() and out.stat().st_size == 50_000)
    st = out.stat()
    # Reserved up to maxbytes (no block reserved one by one as data comes);
    # the size is the data's.
    assert st.st_size == 50_000 and st.st_blocks * 512 >= 100_000
    os.close(fd)
    assert w.receive() == {"op": "eof", "id": sid}
    st = out.stat()
    assert st.st_size == 50_000 and st.st_blocks * 512 < 100_000  # given back at close
    assert Path(f"{out}.1").stat().st_size == 100_000
    assert w.close() == 0


def test_a_backup_removed_by_hand_leaves_a_gap_that_moves_up(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_bytes(b"0" * 1000)  # full
    Path(f"{out}.1").write_bytes(b"one")
    Path(f"{out}.3").write_bytes(b"three")  # out.log.2 was removed
    w = WriterProc()
    fd, sid = w.follow(out, 1000, 3)
    os.write(fd, b"x" * 10)
    os.close(fd)
    assert w.receive() == {"op": "eof", "id": sid}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]
    assert [Path(f"{out}{n}").read_bytes() for n in ("", ".1", ".2")] == [b"x" * 10, b"0" * 1000, b"one"]
    assert w.close() == 0


def test_a_full_disk_drops_data_reports_once_and_never_blocks(tmp_path: Path) -> None:
    w = WriterProc()
    fd, sid = w.follow(Path("/dev/full"), 10 ** 9, 1)  # every write: ENOSPC
    writer = threading.Thread(target=write_all, args=(fd, 20 * 2 ** 20, b"y" * 65536))
    writer.start()
    writer.join(timeout=20)
    assert not writer.is_alive(), "the program was blocked by a full disk"
    os.close(fd)
    first = w.receive()
    assert first["op"] == "error" and "No space left on device" in str(first["message"])
    assert w.receive() == {"op": "eof", "id": sid}  # no second error message in between
    assert w.close() == 0


def test_a_backup_name_cannot_truncate_another_file(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    out = tmp_path / "out.log"
    Path(f"{out}.1").symlink_to(victim)  # planted where the oldest backup goes
    w = WriterProc()
    fd, sid = w.follow(out, 1000, 1)
    write_all(fd, 3000, b"z" * 3000)
    os.close(fd)
    first = w.receive()
    assert first["op"] == "error" and "cannot rotate" in str(first["message"])
    assert w.receive() == {"op": "eof", "id": sid}
    assert victim.read_bytes() == b"precious\n"
    assert w.close() == 0


def test_the_writer_drains_everything_after_the_daemon_is_gone(tmp_path: Path) -> None:
    w = WriterProc()
    out = tmp_path / "out.log"
    fd, _ = w.follow(out, 10 ** 9, 1)
    w.sock.close()  # the daemon dies; the program goes on writing
    data = b"".join(b"%d\n" % i for i in range(200_000))
    write_all(fd, len(data), data)
    assert w.proc.poll() is None  # still draining: the pipe is open
    os.close(fd)
    assert w.proc.wait(timeout=10) == 0
    assert out.read_bytes() == data


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_finish_drains_then_exits_without_spinning(tmp_path: Path) -> None:
    w = WriterProc()
    out = tmp_path / "out.log"
    fd, sid = w.follow(out, 10 ** 9, 1)
    for _ in range(2):  # a second "finish" must not stay unread (a busy loop)
        w.sock.send(encode("finish"))
    cpu = cpu_seconds(w.proc.pid)
    time.sleep(1.0)  # sleep-ok: a window to measure: the writer waits for the pipe meanwhile
    assert cpu_seconds(w.proc.pid) - cpu < 0.2, "the writer spins while it waits"
    assert w.proc.poll() is None  # the pipe is still open: still draining
    os.write(fd, b"last\n")
    os.close(fd)
    assert w.receive() == {"op": "eof", "id": sid}
    assert w.proc.wait(timeout=10) == 0
    assert out.read_bytes() == b"last\n"


# ---- taskctl tail -f across a rotation


class RotatingClient:
    """taskctl's client as follow_fd uses it: `sleep` drives the scenario."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sleeps = 0
        self.reopens = 0

    def sleep(self, _seconds: float) -> None:
        self.sleeps += 1
        if self.sleeps == 1:
            with open(self.path, "ab") as f:
                f.write(b"a2\n")
        elif self.sleeps == 2:  # the writer's last bytes, then the rotation
            with open(self.path, "ab") as f:
                f.write(b"a3\n")
            os.rename(self.path, f"{self.path}.1")
            self.path.write_bytes(b"b1\n")
        elif self.sleeps > 40:
            raise KeyboardInterrupt

    def open_log(self) -> int | None:
        self.reopens += 1
        return os.open(self.path, os.O_RDONLY)


def test_tail_follows_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"a1\n")
    client = RotatingClient(path)
    out = io.StringIO()
    ctx = context.Context(client, out, io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        follow.follow_fd(ctx, os.open(path, os.O_RDONLY), 1000, True, client.open_log)
    assert out.getvalue() == "a1\na2\na3\nb1\n"
    assert client.reopens >= 2  # once more after the switch: nothing changed, fd closed
    assert len(os.listdir(f"/proc/{os.getpid()}/fd")) < 50
