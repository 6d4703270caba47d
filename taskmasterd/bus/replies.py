"""`SendReply`: what dbus-next 0.2.3's `BaseMessageBus._send_reply` returns, fixed.

The library builds a new `SendReply` class on every call it handles (a
class statement inside `_send_reply`: a few percent of a call's cost), and
its `__exit__` does not return what `_exit` decided, so a `DBusError`
raised by a handler, although answered, also propagates and is logged at
ERROR with a traceback. This is that class, made once, whose `__exit__`
suppresses the DBusError it has answered; any other exception is answered
as before (`com.dubstepdish.dbus.next.ServiceError`, the traceback in its
text) and still propagates (logged). A copy of the library's code (pinned.py
pins the version it was read from); TaskmasterBus._send_reply returns one.
"""

from __future__ import annotations

import traceback
from typing import Any

from dbus_next import Message
from dbus_next.constants import ErrorType, MessageFlag
from dbus_next.errors import DBusError


class SendReply:
    """dbus-next 0.2.3's `SendReply` (made by `BaseMessageBus._send_reply(msg)`) for `msg` on `bus`."""

    def __init__(self, bus: Any, msg: Any) -> None:
        self.bus = bus
        self.msg = msg

    def __enter__(self) -> SendReply:
        return self

    def __call__(self, reply: Any) -> None:
        if self.msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return
        self.bus.send(reply)

    def _exit(self, exc_type: Any, exc_value: Any, tb: Any) -> bool | None:
        if exc_type is None:
            return None
        if issubclass(exc_type, DBusError):
            self(exc_value._as_message(self.msg))
            return True
        if issubclass(exc_type, Exception):
            self(Message.new_error(
                self.msg, ErrorType.SERVICE_ERROR,
                f"The service interface raised an error: {exc_value}.\n{traceback.format_tb(tb)}"))
            return True
        return None

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> bool:
        """The library's `__exit__` (which returns None: nothing suppressed), except that
        a DBusError, answered, is suppressed."""
        self._exit(exc_type, exc_value, tb)
        return exc_type is not None and issubclass(exc_type, DBusError)

    def send_error(self, exc: BaseException) -> None:
        self._exit(exc.__class__, exc, exc.__traceback__)
