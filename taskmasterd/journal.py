"""Lifecycle events to the journal, with structured fields and a stable
MESSAGE_ID per event kind (see README: `journalctl MESSAGE_ID=...`).

When journald goes away, the events keep going to the log file: the loss is
logged once (not per event), and its return once. libsystemd drops a
message silently when the socket is gone (and raises when it is there but
nobody listens), so the socket is looked at before each message: a stat.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

from taskmasterd.events import Event, Kind
from taskmasterd.logsink import format_event, level_of
from taskmasterd.states import State

# Fixed forever: MESSAGE_IDs are derived from this namespace and the kind.
_NAMESPACE = uuid.UUID("8b0f4a6e-2f7c-4d0b-9a55-6a3e1c2d7f10")
KINDS: tuple[str, ...] = (*(s.value for s in State), *(k.value for k in Kind))
MESSAGE_IDS = {kind: uuid.uuid5(_NAMESPACE, kind).hex for kind in KINDS}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_PRIORITY = {50: 2, 40: 3, 30: 4, 20: 6, 10: 7}  # logging level -> syslog priority

log = logging.getLogger("taskmasterd")


def fields(event: Event) -> dict[str, str]:
    out = {
        "MESSAGE": format_event(event),
        "PRIORITY": str(_PRIORITY.get(level_of(event), 6)),
        "SYSLOG_IDENTIFIER": "taskmasterd",
        "TASKMASTER_EVENT": str(event.kind),
        "TASKMASTER_PROCESS": event.process,
    }
    if event.kind in MESSAGE_IDS:
        out["MESSAGE_ID"] = MESSAGE_IDS[event.kind]
    if event.program:
        out["TASKMASTER_PROGRAM"] = event.program
    if event.pid:
        out["TASKMASTER_PID"] = str(event.pid)
    if event.exit_status is not None:
        out["TASKMASTER_EXIT_STATUS"] = str(event.exit_status)
    elif event.exit_unknown:
        out["TASKMASTER_EXIT_STATUS"] = "unknown"  # an adopted process: not our child
    if event.kind in (State.EXITED, State.STOPPED):
        out["TASKMASTER_EXPECTED"] = "yes" if event.expected else "no"
    if event.old_state is not None:
        out["TASKMASTER_OLD_STATE"] = str(event.old_state)
    for key, value in event.extra_fields():
        out[f"TASKMASTER_{key.upper()}"] = value
    return out


def _encodable(value: str) -> str:
    """`value`, with a lone surrogate (a path of non-UTF-8 bytes) as its \\udXXX escape."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


class JournalSink:
    """Subscribe `write` to the event bus when journald is there."""

    def __init__(self, send: Callable[..., Any] | None = None,
                 socket_path: str | None = None) -> None:
        if send is None:
            from systemd import journal

            send = journal.send
            socket_path = socket_path or JOURNAL_SOCKET
        self._send = send
        self._socket = socket_path  # None: not looked at (a sender given by a test)
        self._lost = False  # journald unreachable since the last message that failed

    @staticmethod
    def available() -> bool:
        return os.path.exists(JOURNAL_SOCKET)

    def write(self, event: Event) -> None:
        message = {k: _encodable(v) for k, v in fields(event).items()}
        text = message.pop("MESSAGE")
        try:
            if self._socket is not None and not os.path.exists(self._socket):
                raise FileNotFoundError(f"{self._socket} is gone")
            self._send(text, **message)
        except OSError as exc:
            if not self._lost:
                self._lost = True
                log.warning("journal: cannot reach journald (%s); events go to the log file only "
                            "until it is back", exc.strerror or exc)
            return
        if self._lost:
            self._lost = False
            log.warning("journal: journald is reachable again; events go to the journal again")
