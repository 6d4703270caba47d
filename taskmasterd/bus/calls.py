"""What every D-Bus adapter (objects.py, taskobjects.py) uses to answer a call:
errors by name (`dbus_errors`), bounded arguments (`check_arg`), named
out-arguments and signal arguments (`named`), times on the wire (`us`), output fds (`open_output`).

Errors: a domain error becomes org.taskmaster.Taskmaster1.Error.<code> with
its message; anything else becomes .Failed with a one-line message (the
traceback goes to the debug log, never to the caller).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from dbus_next import DBusError

from taskmasterd.bus.names import ERROR_PREFIX
from taskmasterd.bus.writer import close_after_send
from taskmasterd.errors import BadName, NoOutput, NotAFile, TaskmasterError

log = logging.getLogger("taskmasterd")

MAX_ARG = 4096  # longer strings are refused before any work is done


@contextlib.contextmanager
def dbus_errors(call: str) -> Iterator[None]:
    try:
        yield
    except DBusError:
        raise
    except TaskmasterError as exc:
        raise DBusError(ERROR_PREFIX + exc.code, str(exc)) from None
    except Exception as exc:
        log.debug("D-Bus call %s failed", call, exc_info=True)
        log.warning("D-Bus call %s failed: %s: %s", call, type(exc).__name__, exc)
        raise DBusError(ERROR_PREFIX + "Failed", f"{call} failed: {exc}") from None


def check_arg(value: str, what: str) -> str:
    if len(value) > MAX_ARG:
        raise BadName(f"{what} is {len(value)} characters long; at most {MAX_ARG} are accepted")
    return value


def named(*names: str) -> Callable[[Any], Any]:
    """Name the out-arguments of a dbus-next `@method` (`names`), or the
    arguments of a `@signal` (its Python parameters when `names` is empty).
    Goes above the dbus-next decorator, whose introspection data it edits."""
    def apply(member: Any) -> Any:
        if "__DBUS_METHOD" in member.__dict__:
            args = member.__dict__["__DBUS_METHOD"].introspection.out_args
            given = names
        else:
            args = member.__dict__["__DBUS_SIGNAL"].introspection.args
            given = names or tuple(inspect.signature(member).parameters)[1:]  # after self
        if len(given) != len(args):
            raise TypeError(f"{member.__name__}: {len(args)} arguments, {len(given)} names")
        for arg, name in zip(args, given, strict=True):
            arg.name = name
        return member
    return apply


def us(seconds: float) -> int:
    """Wall clock seconds as µs since the epoch (systemd's timestamps); 0 stays 0."""
    return int(seconds * 1_000_000)


def open_output(path: str, missing: str, not_a_file: str) -> int:
    """A read-only fd of the output file `path`, marked to be closed once sent
    (a handler returns it as 'h'); NoOutput(`missing`) when the file does not
    exist, NotAFile(`not_a_file`) when it is not a regular file."""
    try:
        # O_NONBLOCK: a FIFO as output file must not stall the daemon here.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NoOutput(missing) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAFile(not_a_file)
    return close_after_send(fd)
