"""Ending a helper process a test started (a bus, an sshd): SIGTERM, then
SIGKILL if it has not left within `timeout` seconds; always reaped."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
