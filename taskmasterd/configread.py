"""Reading a configuration file: a regular file, of bounded size, as UTF-8
text; anything else a one-line reason (Unreadable) or a located error
(ConfigError). The main file (taskmasterd.config) and each included one
(taskmasterd.configschema)."""

from __future__ import annotations

import os
import stat

from taskmasterd.yamlnodes import ConfigError, ConfigIssue

# The largest configuration file read: a file of 1,000 programs is ~100 KB.
# Anything bigger is refused before it is read (`--check-config /dev/zero`
# would read until the kernel stopped it).
MAX_FILE_SIZE = 16 * 1024 * 1024

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


class Unreadable(Exception):
    """A config file cannot be read (its message says why)."""


class TooBig(Unreadable):
    """A config file is over the size read."""


def read_file(name: str, limit: int = MAX_FILE_SIZE) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or Unreadable."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = next((w for test, w in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise Unreadable(f"it is {what}; expected a regular file")
        if st.st_size > limit:
            raise TooBig(f"it is {st.st_size} bytes; at most {limit} ({limit >> 20} MiB) are read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # it may have grown since fstat
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooBig(f"it is over {limit} bytes; at most {limit >> 20} MiB are read")
    return data


def decode(data: bytes, name: str) -> str:
    """UTF-8 text (a BOM dropped), or ConfigError at the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [ConfigIssue(name, line, column, "", f"not valid UTF-8 ({e.reason}); expected UTF-8 text")]
        ) from None
