"""The signal wakeup fd (`signal.set_wakeup_fd`) for the length of one wait,
so a poll/select wakes on a signal: taskctl's waits on the bus
(connection.py) and the console pump (console.py) share it."""

from __future__ import annotations

import os
import signal
import threading


class SignalWakeup:
    """A pipe whose write end is the wakeup fd (each signal writes its
    number); `install` returns None when it cannot be had: not the main
    thread, or the fd is someone else's (an asyncio loop's)."""

    def __init__(self, read: int, write: int) -> None:
        self.read, self.write = read, write

    @classmethod
    def install(cls) -> SignalWakeup | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        wake = cls(read, write)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except (ValueError, OSError):
            wake.close()
            return None
        if previous != -1:  # not ours to take
            signal.set_wakeup_fd(previous)
            wake.close()
            return None
        return wake

    def uninstall(self) -> None:
        signal.set_wakeup_fd(-1)
        self.close()

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)
